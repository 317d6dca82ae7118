/* api/tools.c - the names of the tool surface. */
#include "api/api.h"

#include <stddef.h>

const char *const cq_tool_names[] = {
    "executeCode", "executeCommand",        "readFiles", "listFiles", "removeFiles",
    "writeFiles",  "startCommandExecution", "getTask",   "stopTask",  NULL,
};
