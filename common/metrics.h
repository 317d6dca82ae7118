/* common/metrics.h - counters, gauges and histograms, rendered in Prometheus' text
 * exposition format (version 0.0.4) for the daemons' /metrics.
 *
 * A registry holds families (a name, a help text, a type and a fixed list of label
 * names); a family holds a child per set of label values. Updating a child is a few
 * atomic operations; finding one takes its family's mutex, so hot paths keep the
 * child (cq_metric_child) and update that.
 *
 * Cardinality is bounded on purpose: label values are codeq's own words (tool names,
 * outcomes, error codes), never a client's ids, and a family holds at most
 * CQ_METRIC_MAX_CHILDREN children. Values past the bound all land in one child whose
 * labels read "other", so a bug that labels by session id costs one line of output,
 * not the daemon's memory.
 */
#ifndef CQ_COMMON_METRICS_H
#define CQ_COMMON_METRICS_H

#include <stddef.h>
#include "common/error.h"

#define CQ_METRIC_MAX_LABELS   6
#define CQ_METRIC_MAX_CHILDREN 512
#define CQ_METRIC_MAX_BUCKETS  24

/* What a scrape answers with (the format's own media type). */
#define CQ_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct cq_metrics;      /* a registry */
struct cq_metric;       /* a family */
struct cq_metric_child; /* one set of label values of a family */

int cq_metrics_create(struct cq_metrics **out, struct cq_error *err);
void cq_metrics_destroy(struct cq_metrics *m);

/* Registers a family. label_names is NULL-terminated (at most CQ_METRIC_MAX_LABELS), or
 * NULL for none. Names follow Prometheus: [a-zA-Z_:][a-zA-Z0-9_:]* for metrics,
 * [a-zA-Z_][a-zA-Z0-9_]* for labels, none starting with "__", and no "le" label on a
 * histogram. A name registered again returns the same family when its type and labels
 * agree, and is refused (CQ_EINVALID) otherwise: two parts of the program meaning
 * different things by one name would corrupt both. The family lives as long as the
 * registry. */
struct cq_metric *cq_metrics_counter(struct cq_metrics *m, const char *name, const char *help,
                                     const char *const *label_names, struct cq_error *err);
struct cq_metric *cq_metrics_gauge(struct cq_metrics *m, const char *name, const char *help,
                                   const char *const *label_names, struct cq_error *err);
/* bounds: the buckets' upper bounds, strictly increasing and finite (the +Inf bucket is
 * implied), at most CQ_METRIC_MAX_BUCKETS. */
struct cq_metric *cq_metrics_histogram(struct cq_metrics *m, const char *name, const char *help,
                                       const char *const *label_names, const double *bounds,
                                       size_t n_bounds, struct cq_error *err);

/* The child for one set of label values (one value per label name; NULL for a family
 * without labels), made on first use. Never NULL: past the bound, or out of memory,
 * the "other" child. Valid as long as the registry. */
struct cq_metric_child *cq_metric_child(struct cq_metric *f, const char *const *values);

/* Counters only go up: a negative or NaN amount is ignored. */
void cq_metric_child_add(struct cq_metric_child *c, double v);
void cq_metric_child_set(struct cq_metric_child *c, double v);     /* gauges */
void cq_metric_child_observe(struct cq_metric_child *c, double v); /* histograms */

/* The same, finding the child each time. */
void cq_metric_add(struct cq_metric *f, const char *const *values, double v);
void cq_metric_set(struct cq_metric *f, const char *const *values, double v);
void cq_metric_observe(struct cq_metric *f, const char *const *values, double v);

/* A function called at each render, before anything is written, for values that are
 * read rather than counted (sessions live, warm sandboxes ready): it sets gauges. It
 * runs on the scraping thread; it must not render. */
int cq_metrics_on_render(struct cq_metrics *m, void (*fn)(void *ctx), void *ctx,
                         struct cq_error *err);
/* Forgets the function registered with that ctx, once no render is running it: ctx may
 * be freed when this returns (a worker core destroyed before its registry). */
void cq_metrics_off_render(struct cq_metrics *m, void (*fn)(void *ctx), void *ctx);

/* The exposition text, families in registration order, children in the order they were
 * made; *text is malloc'd and NUL-terminated, *len its length. A family without
 * children is still described (HELP and TYPE), so that a scrape shows what exists. */
int cq_metrics_render(struct cq_metrics *m, char **text, size_t *len, struct cq_error *err);

#endif
