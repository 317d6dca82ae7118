/* fleet/log.c - structured logs: one JSON object per line on stderr, so that log
 * shippers need no parser. Lines are written with one write(2) each: lines of
 * different threads never interleave. */
#define _GNU_SOURCE
#include "fleet/log.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *component = "codeq";
static enum cq_log_level threshold = CQ_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void cq_log_setup(const char *name, const char *level)
{
    component = name;
    /* "off": for command-line tools, whose own messages say what failed. */
    if (level != NULL && strcmp(level, "off") == 0)
        threshold = CQ_LOG_ERROR + 1;
    for (int i = 0; i < 4; i++)
        if (level != NULL && strcmp(level, level_names[i]) == 0)
            threshold = (enum cq_log_level)i;
}

void cq_log(enum cq_log_level level, const char *fmt, ...)
{
    if (level < threshold)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    char ts[40];
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000);
    json_t *line = json_pack("{s:s, s:s, s:s, s:s%}", "ts", ts, "level", level_names[level],
                             "component", component, "msg", msg, strlen(msg));
    char *text = line != NULL ? json_dumps(line, JSON_COMPACT) : NULL;
    json_decref(line);
    if (text == NULL)
        return;
    size_t len = strlen(text);
    text[len] = '\n'; /* replaces the NUL: one write for the whole line */
    ssize_t ignored = write(STDERR_FILENO, text, len + 1);
    (void)ignored;
    free(text);
}
