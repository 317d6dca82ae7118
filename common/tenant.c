/* common/tenant.c - the rule of a tenant's name (common/tenant.h). */
#include "common/tenant.h"

#include <string.h>

bool cq_tenant_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > CQ_TENANT_MAX || name[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
    }
    return true;
}
