/* cli/mcp_catalog.c - the tools of `codeq mcp` as tools/list shows them: every
 * argument described (a model reads these to call the tool right), and an outputSchema
 * for each tool whose successful results always carry structuredContent
 * (result_json.c makes them; a failure, isError true, need not follow it). The file
 * tools (readFiles, writeFiles, listFiles, removeFiles) answer in content only, so
 * they declare none. */
#include "cli/mcp_tools.h"

#include <stdio.h>
#include <stdlib.h>

#define SESSION_ID_PROPERTY                                                                        \
    "\"sessionId\": {\"type\": \"string\", \"description\": \"The session to run in (from "        \
    "startSession); omitted: this connection's default session, started on first use.\"}"
#define TIMEOUT_PROPERTY                                                                           \
    "\"timeout\": {\"type\": \"number\", \"minimum\": 0, \"maximum\": 28800, \"description\": "    \
    "\"Seconds this call may take (default 300, never past the session's end). On expiry code "    \
    "is interrupted (variables kept), a command killed.\"}"
#define COMMAND_PROPERTY                                                                           \
    "\"command\": {\"type\": \"string\", \"minLength\": 1, \"description\": \"A shell command, "   \
    "run as /bin/sh -c COMMAND in the workspace (/workspace).\"}"
#define TASK_ID_PROPERTY                                                                           \
    "\"taskId\": {\"type\": \"string\", \"description\": \"The taskId startCommandExecution "      \
    "returned.\"}"
#define PATHS_PROPERTY(what)                                                                       \
    "\"paths\": {\"type\": \"array\", \"items\": {\"type\": \"string\"}, \"minItems\": 1, "        \
    "\"description\": \"" what " relative to the workspace (/workspace).\"}"

/* The structuredContent of a cell or command (result_json.c). */
#define RUN_OUTPUT_PROPERTIES                                                                      \
    "\"stdout\": {\"type\": \"string\"}, \"stderr\": {\"type\": \"string\"}, \"exitCode\": "       \
    "{\"type\": \"integer\"}, \"executionTime\": {\"type\": \"number\", \"description\": "         \
    "\"Milliseconds.\"}, \"cpuTime\": {\"type\": \"integer\", \"description\": \"CPU "             \
    "milliseconds; 0: unknown.\"}, \"peakMemory\": {\"type\": \"integer\", \"description\": "      \
    "\"The session's peak memory in bytes; 0: unknown.\"}, \"networkBytesSent\": {\"type\": "      \
    "\"integer\"}, \"networkBytesReceived\": {\"type\": \"integer\"}, \"limitsNotEnforced\": "     \
    "{\"type\": \"array\", \"items\": {\"type\": \"string\", \"enum\": [\"memory\", \"cpu\"]}, "   \
    "\"description\": \"Limits the session's sandbox runs without: a normal user's codeq without " \
    "a delegated cgroup (CODEQ_ALLOW_UNLIMITED=1).\"}"
#define RUN_OUTPUT                                                                                 \
    "{\"type\": \"object\", \"properties\": {" RUN_OUTPUT_PROPERTIES "}, \"required\": "           \
    "[\"stdout\", \"stderr\", \"exitCode\", \"executionTime\"]}"
#define TASK_OUTPUT                                                                                \
    "{\"type\": \"object\", \"properties\": {\"taskId\": {\"type\": \"string\"}, "                 \
    "\"taskStatus\": {\"type\": \"string\", \"enum\": [\"submitted\", \"working\", "               \
    "\"completed\", \"canceled\", \"failed\"]}, " RUN_OUTPUT_PROPERTIES "}, \"required\": "        \
    "[\"taskId\", \"taskStatus\", \"executionTime\"]}"
#define SESSION_PROPERTIES                                                                         \
    "\"sessionId\": {\"type\": \"string\"}, \"name\": {\"type\": \"string\"}, \"status\": "        \
    "{\"type\": \"string\", \"enum\": [\"READY\", \"TERMINATED\"]}, \"createdAt\": {\"type\": "    \
    "\"string\", \"format\": \"date-time\"}, \"lastUpdatedAt\": {\"type\": \"string\", "           \
    "\"format\": \"date-time\"}, \"sessionTimeoutSeconds\": {\"type\": \"integer\"}, "             \
    "\"networkMode\": {\"type\": \"string\"}, \"networkAllow\": {\"type\": \"array\", \"items\": " \
    "{\"type\": \"string\"}}, \"codeInterpreterIdentifier\": {\"type\": \"string\"}, "             \
    "\"runtime\": {\"type\": \"string\"}, \"runtimeDigest\": {\"type\": \"string\"}, \"limits\": " \
    "{\"type\": \"object\", \"properties\": {\"memory\": {\"type\": \"integer\"}, \"cpus\": "      \
    "{\"type\": \"number\"}, \"disk\": {\"type\": \"integer\"}, \"pids\": {\"type\": "             \
    "\"integer\"}}}"
#define SESSION_OUTPUT                                                                             \
    "{\"type\": \"object\", \"properties\": {" SESSION_PROPERTIES "}, \"required\": "              \
    "[\"sessionId\", \"status\", \"createdAt\", \"sessionTimeoutSeconds\"]}"

struct tool {
    const char *json;   /* name, description, inputSchema */
    const char *output; /* its outputSchema, or NULL */
};

static const struct tool tools[] = {
    {"{\"name\": \"executeCode\", \"description\": \"Run Python, JavaScript or TypeScript code "
     "in the session's persistent interpreter: variables, imports and files persist between "
     "calls. Returns stdout and stderr, the value of a final expression, and every matplotlib "
     "figure as a PNG image.\", \"inputSchema\": {\"type\": \"object\", \"properties\": "
     "{" SESSION_ID_PROPERTY ", \"code\": {\"type\": \"string\", \"description\": \"The code "
     "to run, as one cell: a final expression's value is returned.\"}, \"language\": "
     "{\"type\": \"string\", \"enum\": [\"python\", \"javascript\", \"typescript\"], "
     "\"default\": \"python\", \"description\": \"Python runs in one interpreter of the "
     "session, JavaScript and TypeScript share another (Node.js).\"}, \"clearContext\": "
     "{\"type\": \"boolean\", \"default\": false, \"description\": \"Start from empty "
     "variables.\"}, \"runtime\": {\"type\": \"string\", \"enum\": [\"python\", \"nodejs\"], "
     "\"description\": \"Optional, checked against language: python for python, nodejs for "
     "javascript and typescript.\"}, " TIMEOUT_PROPERTY "}, \"required\": [\"code\"]}}",
     RUN_OUTPUT},

    {"{\"name\": \"executeCommand\", \"description\": \"Run a shell command (/bin/sh -c) in the "
     "session's workspace. stdout and stderr are kept apart and the real exit code is "
     "returned.\", \"inputSchema\": {\"type\": \"object\", \"properties\": "
     "{" SESSION_ID_PROPERTY ", " COMMAND_PROPERTY ", " TIMEOUT_PROPERTY "}, \"required\": "
     "[\"command\"]}}",
     RUN_OUTPUT},

    {"{\"name\": \"readFiles\", \"description\": \"Read files of the workspace: text as text, "
     "anything else as base64 blobs, with a MIME type.\", \"inputSchema\": {\"type\": "
     "\"object\", \"properties\": {" SESSION_ID_PROPERTY
     ", " PATHS_PROPERTY("Files to read,") "}, \"required\": [\"paths\"]}}",
     NULL},

    {"{\"name\": \"listFiles\", \"description\": \"List a directory of the workspace (names, "
     "sizes, types).\", \"inputSchema\": {\"type\": \"object\", \"properties\": "
     "{" SESSION_ID_PROPERTY ", \"directoryPath\": {\"type\": \"string\", \"description\": "
     "\"Relative to the workspace; default: the workspace itself.\"}}}}",
     NULL},

    {"{\"name\": \"removeFiles\", \"description\": \"Remove files or directories (recursively) "
     "from the workspace.\", \"inputSchema\": {\"type\": \"object\", \"properties\": "
     "{" SESSION_ID_PROPERTY
     ", " PATHS_PROPERTY("Files or directories to remove,") "}, \"required\": [\"paths\"]}}",
     NULL},

    {"{\"name\": \"writeFiles\", \"description\": \"Write files into the workspace, creating "
     "directories. Give text, or blob (base64) for bytes; up to 100 MB a file.\", "
     "\"inputSchema\": {\"type\": \"object\", \"properties\": {" SESSION_ID_PROPERTY
     ", \"content\": {\"type\": \"array\", \"minItems\": 1, \"description\": \"The files to "
     "write, each with exactly one of text or blob.\", \"items\": {\"type\": \"object\", "
     "\"properties\": {\"path\": {\"type\": \"string\", \"description\": \"Relative to the "
     "workspace.\"}, \"text\": {\"type\": \"string\", \"description\": \"The file's content "
     "as text (UTF-8).\"}, \"blob\": {\"type\": \"string\", \"contentEncoding\": \"base64\", "
     "\"description\": \"The file's bytes, base64-encoded.\"}}, \"required\": [\"path\"]}}}, "
     "\"required\": [\"content\"]}}",
     NULL},

    {"{\"name\": \"startCommandExecution\", \"description\": \"Start a shell command in the "
     "background; returns a taskId for getTask and stopTask.\", \"inputSchema\": {\"type\": "
     "\"object\", \"properties\": {" SESSION_ID_PROPERTY ", " COMMAND_PROPERTY
     ", \"timeout\": {\"type\": \"number\", \"minimum\": 0, \"maximum\": 28800, "
     "\"description\": \"Seconds the command may run; default: as long as the session "
     "lives. On expiry it is killed.\"}}, \"required\": [\"command\"]}}",
     TASK_OUTPUT},

    {"{\"name\": \"getTask\", \"description\": \"Status (working, completed, failed, canceled) "
     "and output so far of a background command.\", \"inputSchema\": {\"type\": \"object\", "
     "\"properties\": {" SESSION_ID_PROPERTY ", " TASK_ID_PROPERTY "}, \"required\": "
     "[\"taskId\"]}}",
     TASK_OUTPUT},

    {"{\"name\": \"stopTask\", \"description\": \"Stop a background command and everything it "
     "started.\", \"inputSchema\": {\"type\": \"object\", \"properties\": "
     "{" SESSION_ID_PROPERTY ", " TASK_ID_PROPERTY "}, \"required\": [\"taskId\"]}}",
     TASK_OUTPUT},

    {"{\"name\": \"startSession\", \"description\": \"Start a new sandboxed session and return "
     "its sessionId.\", \"inputSchema\": {\"type\": \"object\", \"properties\": {\"name\": "
     "{\"type\": \"string\", \"minLength\": 1, \"maxLength\": 100, \"description\": \"A name "
     "for people; not unique.\"}, \"sessionTimeoutSeconds\": {\"type\": \"integer\", "
     "\"minimum\": 1, \"maximum\": 28800, \"default\": 900, \"description\": \"Time to live "
     "from creation.\"}, \"memory\": {\"type\": \"string\", \"description\": \"Memory limit, "
     "e.g. 1G.\"}, \"disk\": {\"type\": \"string\", \"description\": \"Workspace size, e.g. "
     "512M.\"}, \"cpus\": {\"type\": \"number\", \"exclusiveMinimum\": 0, \"description\": "
     "\"CPU cores, e.g. 0.5.\"}, \"pids\": {\"type\": \"integer\", \"minimum\": 1, "
     "\"description\": \"Processes and threads at once.\"}, \"env\": {\"type\": \"object\", "
     "\"additionalProperties\": {\"type\": \"string\"}, \"maxProperties\": 256, "
     "\"description\": \"Environment variables of the session's code and commands.\"}, "
     "\"networkMode\": {\"type\": \"string\", \"enum\": [\"NONE\", \"PUBLIC\", \"ALLOWLIST\"], "
     "\"description\": \"NONE: loopback only; PUBLIC: public addresses and DNS; ALLOWLIST: "
     "networkAllow only. Default: the server's (network_default).\"}, \"networkAllow\": "
     "{\"type\": \"array\", \"items\": {\"type\": \"string\"}, \"description\": \"ALLOWLIST: "
     "destinations NAME, *.NAME, IP or CIDR, each with an optional :PORT.\"}, "
     "\"codeInterpreterIdentifier\": {\"type\": \"string\", \"default\": \"codeq.default\", "
     "\"description\": \"The code interpreter to start on (codeq interpreter list): its "
     "runtime, network and limits are the session's; memory, disk, cpus, pids and "
     "sessionTimeoutSeconds given here override its limits.\"}}}}",
     SESSION_OUTPUT},

    {"{\"name\": \"stopSession\", \"description\": \"Stop a session: its processes end and its "
     "files are gone.\", \"inputSchema\": {\"type\": \"object\", \"properties\": "
     "{\"sessionId\": {\"type\": \"string\", \"description\": \"The session to stop.\"}}, "
     "\"required\": [\"sessionId\"]}}",
     SESSION_OUTPUT},

    {"{\"name\": \"getSession\", \"description\": \"A session's status (READY or TERMINATED), "
     "creation time, time to live, code interpreter, runtime and limits.\", \"inputSchema\": "
     "{\"type\": \"object\", \"properties\": {\"sessionId\": {\"type\": \"string\", "
     "\"description\": \"The session to describe.\"}}, \"required\": [\"sessionId\"]}}",
     SESSION_OUTPUT},

    {"{\"name\": \"listSessions\", \"description\": \"Sessions of this server, newest first.\", "
     "\"inputSchema\": {\"type\": \"object\", \"properties\": {\"status\": {\"type\": "
     "\"string\", \"enum\": [\"READY\", \"TERMINATED\"], \"description\": \"Only sessions in "
     "this state.\"}, \"maxResults\": {\"type\": \"integer\", \"minimum\": 1, \"maximum\": "
     "100, \"default\": 10, \"description\": \"Sessions per page.\"}, \"nextToken\": "
     "{\"type\": \"string\", \"description\": \"The nextToken of the previous page.\"}}}}",
     "{\"type\": \"object\", \"properties\": {\"items\": {\"type\": \"array\", \"items\": "
     "" SESSION_OUTPUT "}, \"nextToken\": {\"type\": \"string\"}}, \"required\": [\"items\"]}"},
};

static json_t *load(const char *text, size_t i)
{
    json_error_t error;
    json_t *v = json_loads(text, 0, &error);
    if (v == NULL) { /* a bug in the table above: fail loudly in tests */
        fprintf(stderr, "codeq mcp: bad tool definition %zu: %s\n", i, error.text);
        abort();
    }
    return v;
}

json_t *cq_mcp_tool_list(bool output_schema)
{
    json_t *list = json_array();
    for (size_t i = 0; i < sizeof(tools) / sizeof(tools[0]); i++) {
        json_t *tool = load(tools[i].json, i);
        if (output_schema && tools[i].output != NULL)
            json_object_set_new(tool, "outputSchema", load(tools[i].output, i));
        json_array_append_new(list, tool);
    }
    return list;
}
