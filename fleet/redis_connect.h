/* fleet/redis_connect.h - opening one Redis connection as the settings say: TCP, then
 * TLS (redis_tls*), then AUTH (redis_user, redis_password or redis_password_file).
 * Private to fleet/: the store (store.c) is the only caller, for the daemons and the
 * C client alike, and dials again through it after every broken connection. */
#ifndef CQ_FLEET_REDIS_CONNECT_H
#define CQ_FLEET_REDIS_CONNECT_H

#include <hiredis/hiredis.h>
#include "common/error.h"
#include "fleet/config.h"

struct cq_redis_dialer;

/* Checks and loads what every connection shares (the TLS context: CA, client
 * certificate); host and port are where to connect. Fails with the file or the
 * setting at fault. */
int cq_redis_dialer_new(const struct cq_fleet_config *cfg, const char *host, int port,
                        struct cq_redis_dialer **out, struct cq_error *err);
void cq_redis_dialer_free(struct cq_redis_dialer *d);

/* A connected, TLS-wrapped and authenticated context whose commands time out after
 * command_timeout_s, or NULL and err saying which step failed and why ("TLS handshake
 * ...: certificate verify failed (hostname mismatch)", "Redis ... refused the password
 * for user 'x'"). The password never appears in err. */
redisContext *cq_redis_dial(struct cq_redis_dialer *d, int command_timeout_s, struct cq_error *err);

#endif
