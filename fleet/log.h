/* fleet/log.h - logs: one JSON object per line on stderr. */
#ifndef CQ_FLEET_LOG_H
#define CQ_FLEET_LOG_H

enum cq_log_level { CQ_LOG_DEBUG, CQ_LOG_INFO, CQ_LOG_WARN, CQ_LOG_ERROR };

void cq_log_setup(const char *component, const char *level);
void cq_log(enum cq_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
