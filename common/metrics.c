/* common/metrics.c - a registry of metric families and their text exposition.
 *
 * Values are C11 atomics: a counter or gauge is a double kept as the bits of an
 * _Atomic uint64_t, added to with a compare-and-swap loop (the compiler's own += on
 * an _Atomic double would need libatomic for its floating-point exceptions). A
 * histogram keeps a count per bucket (not cumulative, so that an observation touches
 * one bucket) and its sum. A render adds the buckets up itself and writes their total
 * as _count, so that the +Inf bucket always equals the count, as the format requires,
 * even while observations race with the scrape.
 */
#include "common/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct cq_metric_child {
    struct cq_metric *family;
    char *values[CQ_METRIC_MAX_LABELS];
    _Atomic uint64_t value;                              /* counters and gauges: a double's bits */
    _Atomic uint64_t buckets[CQ_METRIC_MAX_BUCKETS + 1]; /* histograms; the last is +Inf */
    _Atomic uint64_t sum;                                /* a double's bits */
};

struct cq_metric {
    char *name, *help;
    enum metric_type type;
    char *labels[CQ_METRIC_MAX_LABELS];
    size_t n_labels;
    double bounds[CQ_METRIC_MAX_BUCKETS];
    size_t n_bounds;
    pthread_mutex_t lock; /* children and n_children */
    struct cq_metric_child *children[CQ_METRIC_MAX_CHILDREN];
    size_t n_children;
    struct cq_metric_child *other; /* past the bound: every label "other" */
    bool other_used;
    struct cq_metric *next;
};

struct collector {
    void (*fn)(void *ctx);
    void *ctx;
    struct collector *next;
};

struct cq_metrics {
    pthread_mutex_t lock; /* the family list and the collectors */
    struct cq_metric *first, *last;
    struct collector *collectors;
    /* Held while collectors run: cq_metrics_off_render waits for a render in progress,
     * so that a collector's context can be freed right after. */
    pthread_mutex_t collecting;
};

int cq_metrics_create(struct cq_metrics **out, struct cq_error *err)
{
    struct cq_metrics *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return cq_error_sys(err, ENOMEM, "metrics registry");
    pthread_mutex_init(&m->lock, NULL);
    pthread_mutex_init(&m->collecting, NULL);
    *out = m;
    return 0;
}

static void free_child(struct cq_metric_child *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < CQ_METRIC_MAX_LABELS; i++)
        free(c->values[i]);
    free(c);
}

static void free_family(struct cq_metric *f)
{
    for (size_t i = 0; i < f->n_children; i++)
        free_child(f->children[i]);
    free_child(f->other);
    for (size_t i = 0; i < f->n_labels; i++)
        free(f->labels[i]);
    pthread_mutex_destroy(&f->lock);
    free(f->name);
    free(f->help);
    free(f);
}

void cq_metrics_destroy(struct cq_metrics *m)
{
    if (m == NULL)
        return;
    for (struct cq_metric *f = m->first, *next; f != NULL; f = next) {
        next = f->next;
        free_family(f);
    }
    for (struct collector *c = m->collectors, *next; c != NULL; c = next) {
        next = c->next;
        free(c);
    }
    pthread_mutex_destroy(&m->lock);
    pthread_mutex_destroy(&m->collecting);
    free(m);
}

/* ---- registration -------------------------------------------------------------------- */

static bool valid_name(const char *s, bool colons)
{
    if (s == NULL || s[0] == '\0' || (s[0] == '_' && s[1] == '_'))
        return false;
    for (size_t i = 0; s[i] != '\0'; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (colons && c == ':') || (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

static struct cq_metric_child *new_child(struct cq_metric *f, const char *const *values)
{
    struct cq_metric_child *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->family = f;
    for (size_t i = 0; i < f->n_labels; i++) {
        if ((c->values[i] = strdup(values != NULL && values[i] != NULL ? values[i] : "")) == NULL) {
            free_child(c);
            return NULL;
        }
    }
    return c;
}

static bool same_shape(const struct cq_metric *f, enum metric_type type,
                       const char *const *label_names, size_t n_labels, const double *bounds,
                       size_t n_bounds)
{
    if (f->type != type || f->n_labels != n_labels || f->n_bounds != n_bounds)
        return false;
    for (size_t i = 0; i < n_labels; i++)
        if (strcmp(f->labels[i], label_names[i]) != 0)
            return false;
    for (size_t i = 0; i < n_bounds; i++)
        if (f->bounds[i] != bounds[i])
            return false;
    return true;
}

static struct cq_metric *add_family(struct cq_metrics *m, enum metric_type type, const char *name,
                                    const char *help, const char *const *label_names,
                                    const double *bounds, size_t n_bounds, struct cq_error *err)
{
    if (!valid_name(name, true)) {
        cq_error_set(err, CQ_EINVALID, "metric name '%s' is not [a-zA-Z_:][a-zA-Z0-9_:]*",
                     name != NULL ? name : "");
        return NULL;
    }
    size_t n_labels = 0;
    for (; label_names != NULL && label_names[n_labels] != NULL; n_labels++) {
        const char *l = label_names[n_labels];
        if (n_labels == CQ_METRIC_MAX_LABELS) {
            cq_error_set(err, CQ_EINVALID, "metric %s: more than %d labels", name,
                         CQ_METRIC_MAX_LABELS);
            return NULL;
        }
        if (!valid_name(l, false) || (type == METRIC_HISTOGRAM && strcmp(l, "le") == 0)) {
            cq_error_set(err, CQ_EINVALID, "metric %s: '%s' is not a label name it may have", name,
                         l);
            return NULL;
        }
    }
    if (n_bounds > CQ_METRIC_MAX_BUCKETS) {
        cq_error_set(err, CQ_EINVALID, "metric %s: more than %d buckets", name,
                     CQ_METRIC_MAX_BUCKETS);
        return NULL;
    }
    for (size_t i = 0; i < n_bounds; i++) {
        if (!isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1])) {
            cq_error_set(err, CQ_EINVALID,
                         "metric %s: bucket bounds must be finite and strictly increasing", name);
            return NULL;
        }
    }

    pthread_mutex_lock(&m->lock);
    for (struct cq_metric *f = m->first; f != NULL; f = f->next) {
        if (strcmp(f->name, name) != 0)
            continue;
        bool same = same_shape(f, type, label_names, n_labels, bounds, n_bounds);
        pthread_mutex_unlock(&m->lock);
        if (!same) {
            cq_error_set(err, CQ_EINVALID,
                         "metric %s is already registered with another type, labels or buckets",
                         name);
            return NULL;
        }
        return f;
    }
    struct cq_metric *f = calloc(1, sizeof(*f));
    bool ok = f != NULL && (f->name = strdup(name)) != NULL &&
              (f->help = strdup(help != NULL ? help : "")) != NULL;
    if (ok) {
        pthread_mutex_init(&f->lock, NULL);
        f->type = type;
        for (; ok && f->n_labels < n_labels; f->n_labels++)
            ok = (f->labels[f->n_labels] = strdup(label_names[f->n_labels])) != NULL;
        if (n_bounds > 0)
            memcpy(f->bounds, bounds, n_bounds * sizeof(*bounds));
        f->n_bounds = n_bounds;
        const char *other[CQ_METRIC_MAX_LABELS];
        for (size_t i = 0; i < CQ_METRIC_MAX_LABELS; i++)
            other[i] = "other";
        ok = ok && (f->other = new_child(f, other)) != NULL;
    }
    if (!ok) {
        pthread_mutex_unlock(&m->lock);
        if (f != NULL && f->name != NULL && f->help != NULL)
            free_family(f);
        else if (f != NULL) {
            free(f->name);
            free(f);
        }
        cq_error_sys(err, ENOMEM, "metric %s", name);
        return NULL;
    }
    if (m->last != NULL)
        m->last->next = f;
    else
        m->first = f;
    m->last = f;
    pthread_mutex_unlock(&m->lock);
    return f;
}

struct cq_metric *cq_metrics_counter(struct cq_metrics *m, const char *name, const char *help,
                                     const char *const *label_names, struct cq_error *err)
{
    return add_family(m, METRIC_COUNTER, name, help, label_names, NULL, 0, err);
}

struct cq_metric *cq_metrics_gauge(struct cq_metrics *m, const char *name, const char *help,
                                   const char *const *label_names, struct cq_error *err)
{
    return add_family(m, METRIC_GAUGE, name, help, label_names, NULL, 0, err);
}

struct cq_metric *cq_metrics_histogram(struct cq_metrics *m, const char *name, const char *help,
                                       const char *const *label_names, const double *bounds,
                                       size_t n_bounds, struct cq_error *err)
{
    return add_family(m, METRIC_HISTOGRAM, name, help, label_names, bounds, n_bounds, err);
}

int cq_metrics_on_render(struct cq_metrics *m, void (*fn)(void *ctx), void *ctx,
                         struct cq_error *err)
{
    struct collector *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return cq_error_sys(err, ENOMEM, "metrics collector");
    c->fn = fn;
    c->ctx = ctx;
    pthread_mutex_lock(&m->lock);
    c->next = m->collectors;
    m->collectors = c;
    pthread_mutex_unlock(&m->lock);
    return 0;
}

void cq_metrics_off_render(struct cq_metrics *m, void (*fn)(void *ctx), void *ctx)
{
    pthread_mutex_lock(&m->collecting);
    pthread_mutex_lock(&m->lock);
    for (struct collector **link = &m->collectors; *link != NULL; link = &(*link)->next) {
        struct collector *c = *link;
        if (c->fn == fn && c->ctx == ctx) {
            *link = c->next;
            free(c);
            break;
        }
    }
    pthread_mutex_unlock(&m->lock);
    pthread_mutex_unlock(&m->collecting);
}

/* ---- updates ------------------------------------------------------------------------- */

static double load_double(const _Atomic uint64_t *cell)
{
    uint64_t bits = atomic_load(cell);
    double v;
    memcpy(&v, &bits, sizeof(v));
    return v;
}

static void store_double(_Atomic uint64_t *cell, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof(bits));
    atomic_store(cell, bits);
}

static void add_double(_Atomic uint64_t *cell, double v)
{
    uint64_t old = atomic_load(cell), new;
    do {
        double d;
        memcpy(&d, &old, sizeof(d));
        d += v;
        memcpy(&new, &d, sizeof(new));
    } while (!atomic_compare_exchange_weak(cell, &old, new));
}

struct cq_metric_child *cq_metric_child(struct cq_metric *f, const char *const *values)
{
    pthread_mutex_lock(&f->lock);
    struct cq_metric_child *found = NULL;
    for (size_t i = 0; i < f->n_children && found == NULL; i++) {
        struct cq_metric_child *c = f->children[i];
        bool same = true;
        for (size_t l = 0; l < f->n_labels && same; l++)
            same = strcmp(c->values[l], values != NULL && values[l] != NULL ? values[l] : "") == 0;
        if (same)
            found = c;
    }
    if (found == NULL && f->n_children < CQ_METRIC_MAX_CHILDREN &&
        (found = new_child(f, values)) != NULL)
        f->children[f->n_children++] = found;
    if (found == NULL) {
        found = f->other;
        f->other_used = true;
    }
    pthread_mutex_unlock(&f->lock);
    return found;
}

void cq_metric_child_add(struct cq_metric_child *c, double v)
{
    if (c->family->type == METRIC_COUNTER && !(v >= 0))
        return;
    add_double(&c->value, v);
}

void cq_metric_child_set(struct cq_metric_child *c, double v)
{
    store_double(&c->value, v);
}

void cq_metric_child_observe(struct cq_metric_child *c, double v)
{
    const struct cq_metric *f = c->family;
    size_t i = 0;
    while (i < f->n_bounds && !(v <= f->bounds[i]))
        i++;
    atomic_fetch_add(&c->buckets[i], 1);
    add_double(&c->sum, v);
}

void cq_metric_add(struct cq_metric *f, const char *const *values, double v)
{
    cq_metric_child_add(cq_metric_child(f, values), v);
}

void cq_metric_set(struct cq_metric *f, const char *const *values, double v)
{
    cq_metric_child_set(cq_metric_child(f, values), v);
}

void cq_metric_observe(struct cq_metric *f, const char *const *values, double v)
{
    cq_metric_child_observe(cq_metric_child(f, values), v);
}

/* ---- rendering ----------------------------------------------------------------------- */

struct text {
    char *buf;
    size_t len, cap;
    bool failed;
};

static void put(struct text *t, const char *s, size_t n)
{
    if (t->failed)
        return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (t->len + n + 1 > cap)
            cap *= 2;
        char *b = realloc(t->buf, cap);
        if (b == NULL) {
            t->failed = true;
            return;
        }
        t->buf = b;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

static void puts_(struct text *t, const char *s)
{
    put(t, s, strlen(s));
}

/* HELP text escapes backslash and newline; label values also the double quote. */
static void put_escaped(struct text *t, const char *s, bool quote)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\')
            puts_(t, "\\\\");
        else if (*s == '\n')
            puts_(t, "\\n");
        else if (quote && *s == '"')
            puts_(t, "\\\"");
        else
            put(t, s, 1);
    }
}

/* Whole numbers as integers ("40000", not "4e+04"), others as the shortest decimal
 * that reads back as the same double ("0.005", not "0.0050000000000000001"), and the
 * format's spellings of the special values. */
static void format_number(char *b, size_t size, double v)
{
    if (isnan(v)) {
        snprintf(b, size, "NaN");
    } else if (isinf(v)) {
        snprintf(b, size, v > 0 ? "+Inf" : "-Inf");
    } else if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(b, size, "%.0f", v);
    } else {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(b, size, "%.*g", prec, v);
            if (strtod(b, NULL) == v)
                break;
        }
    }
}

static void put_number(struct text *t, double v)
{
    char b[40];
    format_number(b, sizeof(b), v);
    puts_(t, b);
}

static void put_labels(struct text *t, const struct cq_metric_child *c, const char *le)
{
    const struct cq_metric *f = c->family;
    if (f->n_labels == 0 && le == NULL)
        return;
    puts_(t, "{");
    for (size_t i = 0; i < f->n_labels; i++) {
        if (i > 0)
            puts_(t, ",");
        puts_(t, f->labels[i]);
        puts_(t, "=\"");
        put_escaped(t, c->values[i], true);
        puts_(t, "\"");
    }
    if (le != NULL) {
        if (f->n_labels > 0)
            puts_(t, ",");
        puts_(t, "le=\"");
        puts_(t, le);
        puts_(t, "\"");
    }
    puts_(t, "}");
}

static void put_sample(struct text *t, const struct cq_metric_child *c, const char *suffix,
                       const char *le, double v)
{
    puts_(t, c->family->name);
    puts_(t, suffix);
    put_labels(t, c, le);
    puts_(t, " ");
    put_number(t, v);
    puts_(t, "\n");
}

static void put_child(struct text *t, const struct cq_metric_child *c)
{
    const struct cq_metric *f = c->family;
    if (f->type != METRIC_HISTOGRAM) {
        put_sample(t, c, "", NULL, load_double(&c->value));
        return;
    }
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= f->n_bounds; i++) {
        cumulative += atomic_load(&c->buckets[i]);
        char le[40] = "+Inf";
        if (i < f->n_bounds)
            format_number(le, sizeof(le), f->bounds[i]);
        put_sample(t, c, "_bucket", le, (double)cumulative);
    }
    put_sample(t, c, "_sum", NULL, load_double(&c->sum));
    put_sample(t, c, "_count", NULL, (double)cumulative);
}

int cq_metrics_render(struct cq_metrics *m, char **text, size_t *len, struct cq_error *err)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    /* The collectors first, outside the registry's lock: they set gauges, which may
     * make children. */
    pthread_mutex_lock(&m->collecting);
    pthread_mutex_lock(&m->lock);
    struct collector *collectors = m->collectors;
    pthread_mutex_unlock(&m->lock);
    for (struct collector *c = collectors; c != NULL; c = c->next)
        c->fn(c->ctx);
    pthread_mutex_unlock(&m->collecting);

    struct text t = {0};
    pthread_mutex_lock(&m->lock);
    for (struct cq_metric *f = m->first; f != NULL; f = f->next) {
        puts_(&t, "# HELP ");
        puts_(&t, f->name);
        puts_(&t, " ");
        put_escaped(&t, f->help, false);
        puts_(&t, "\n# TYPE ");
        puts_(&t, f->name);
        puts_(&t, " ");
        puts_(&t, type_names[f->type]);
        puts_(&t, "\n");
        pthread_mutex_lock(&f->lock);
        for (size_t i = 0; i < f->n_children; i++)
            put_child(&t, f->children[i]);
        if (f->other_used)
            put_child(&t, f->other);
        pthread_mutex_unlock(&f->lock);
    }
    pthread_mutex_unlock(&m->lock);
    if (t.buf == NULL && !t.failed)
        puts_(&t, "");
    if (t.failed) {
        free(t.buf);
        return cq_error_sys(err, ENOMEM, "render metrics");
    }
    *text = t.buf;
    *len = t.len;
    return 0;
}
