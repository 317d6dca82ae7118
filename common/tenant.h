/* common/tenant.h - the rule of a tenant's name, shared by the fleet's keys
 * (fleet/keys.h) and code interpreter definitions (runtime/interpreter.h), which name
 * the tenants allowed to use them: one rule, so that a definition can name every tenant
 * a keys file can hold and no other. */
#ifndef CQ_COMMON_TENANT_H
#define CQ_COMMON_TENANT_H

#include <stdbool.h>

#define CQ_TENANT_MAX 40 /* characters of a tenant name */

/* Whether name is 1-40 of [a-z0-9-], starting with a letter or digit: it becomes part
 * of Kafka topic names (codeq.replies.<tenant>.) and Redis keys. */
bool cq_tenant_name_ok(const char *name);

#endif
