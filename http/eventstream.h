/* http/eventstream.h - AWS event stream framing (application/vnd.amazon.eventstream).
 *
 * InvokeCodeInterpreter answers with a stream of these messages. Each message is
 *
 *   total length (4, big-endian) | headers length (4) | CRC32 of those 8 bytes (4)
 *   headers: name length (1) | name | value type (1) | value       ... repeated
 *   payload
 *   CRC32 of everything before it (4)
 *
 * CRC32 is the IEEE one (zlib's, Ethernet's). Value types: 0 true, 1 false (no value),
 * 2 byte, 3 short, 4 int, 5 long (big-endian, signed), 6 bytes and 7 string (2-byte
 * length, then the bytes), 8 timestamp (8 bytes, ms since the epoch), 9 uuid (16 bytes).
 *
 * What the AgentCore data plane sends (botocore's service model bedrock-agentcore
 * 2024-02-28: InvokeCodeInterpreterResponse's payload `stream` is CodeInterpreterStreamOutput,
 * an event stream union):
 *  - an event: `:message-type` "event", `:event-type` the union member's name, and
 *    `:content-type` "application/json"; the payload is the member's structure as JSON.
 *    The one event is `result`, a CodeInterpreterResult: {content: [ContentBlock],
 *    structuredContent?: {taskId, taskStatus, stdout, stderr, exitCode, executionTime},
 *    isError?: bool} (an MCP CallToolResult; blobs base64 in JSON).
 *  - a modelled error in mid-stream: `:message-type` "exception", `:exception-type` the
 *    union member's name (accessDeniedException, conflictException,
 *    internalServerException, resourceNotFoundException, serviceQuotaExceededException,
 *    throttlingException, validationException), `:content-type` "application/json";
 *    payload {"message": "..."} (validationException adds reason and fieldList). botocore
 *    raises it as an EventStreamError whose code is that member name.
 *  - anything else: `:message-type` "error" with `:error-code` and `:error-message`
 *    headers and an empty payload.
 * Errors before the stream starts are ordinary HTTP answers (status + x-amzn-ErrorType).
 */
#ifndef CQ_HTTP_EVENTSTREAM_H
#define CQ_HTTP_EVENTSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "common/error.h"

#define CQ_ES_PRELUDE         12
#define CQ_ES_OVERHEAD        16           /* prelude + message CRC */
#define CQ_ES_MAX_HEADERS_LEN (128 * 1024) /* AWS's limits */
#define CQ_ES_MAX_PAYLOAD     (16 * 1024 * 1024)
#define CQ_ES_MAX_HEADERS     32 /* per decoded message; more is refused */

enum cq_es_type {
    CQ_ES_TRUE = 0,
    CQ_ES_FALSE = 1,
    CQ_ES_BYTE = 2,
    CQ_ES_SHORT = 3,
    CQ_ES_INT = 4,
    CQ_ES_LONG = 5,
    CQ_ES_BYTES = 6,
    CQ_ES_STRING = 7,
    CQ_ES_TIMESTAMP = 8,
    CQ_ES_UUID = 9,
};

struct cq_es_header {
    const char *name; /* 1..255 bytes; decoded: not NUL-terminated, see name_len */
    uint8_t name_len; /* encoding: 0 means strlen(name) */
    enum cq_es_type type;
    int64_t integer;      /* byte, short, int, long, timestamp */
    const uint8_t *bytes; /* bytes, string (len bytes), uuid (16) */
    uint16_t len;
};

/* The message framed into a malloc'd *out (the caller frees). -1 with CQ_ELIMIT when a
 * name, a value or the whole is past the format's or AWS's bounds. */
int cq_es_encode(const struct cq_es_header *headers, size_t n_headers, const uint8_t *payload,
                 size_t payload_len, uint8_t **out, size_t *out_len, struct cq_error *err);

/* An event of the stream: `:message-type` event, `:event-type` event_type ("result"),
 * `:content-type` application/json, payload json. */
int cq_es_encode_event(const char *event_type, const char *json, size_t json_len, uint8_t **out,
                       size_t *out_len, struct cq_error *err);

/* A modelled exception: exception_type is the stream union's member name
 * ("validationException"); json its structure ({"message":"..."}). */
int cq_es_encode_exception(const char *exception_type, const char *json, size_t json_len,
                           uint8_t **out, size_t *out_len, struct cq_error *err);

struct cq_es_message {
    struct cq_es_header headers[CQ_ES_MAX_HEADERS];
    size_t n_headers;
    const uint8_t *payload; /* into the decoded buffer */
    size_t payload_len;
};

/* Decodes the message at the start of buf[0..len), of at most max_message bytes (0:
 * the format's maximum, 16 MiB + 128 KiB). Returns the message's length (> 0) with msg
 * pointing into buf, 0 when buf holds only part of a message (read more), or -1 with
 * CQ_EPROTO when it is malformed: a bad CRC, a length out of bounds, a header running
 * past the headers, an unknown value type, more than CQ_ES_MAX_HEADERS headers. A stream
 * with an error is dead: framing cannot be found again after a bad length. */
long cq_es_decode(const uint8_t *buf, size_t len, size_t max_message, struct cq_es_message *msg,
                  struct cq_error *err);

/* A decoded header's string (or bytes) value by name, or NULL; its length in *len. */
const uint8_t *cq_es_header_value(const struct cq_es_message *msg, const char *name, size_t *len);

/* CRC32 (IEEE) of data, continuing from crc (0 to start). */
uint32_t cq_es_crc32(uint32_t crc, const uint8_t *data, size_t len);

#endif
