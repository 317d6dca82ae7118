/* fleet/redis_connect.c - see redis_connect.h.
 *
 * TLS: the OpenSSL context is codeq's own (one per store, built once from redis_tls_ca,
 * redis_tls_cert and redis_tls_key) and each connection gets a new SSL object that
 * hiredis then drives (redisInitiateSSL). hiredis's own context helper would check the
 * certificate chain but never the name in the certificate: any certificate issued by
 * the same CA, for any host, would pass, so the name check (SSL_set1_host, or the IP
 * address) is set here on each connection. Verification is always on: there is no
 * setting to turn it off, and without redis_tls_ca the system's CAs are used.
 *
 * AUTH: sent on every new connection, also after a reconnect, as Redis forgets a
 * connection's identity with it. The password file is read at each connection, so a
 * rotated password is taken by the next reconnect without a restart; the password is
 * held only in this dialer and in the AUTH command's buffer, and never put in an error
 * or a log line. */
#define _GNU_SOURCE
#include "fleet/redis_connect.h"
#include "common/cleanup.h"
#include "common/fileutil.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <hiredis/hiredis_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The connect, the TLS handshake and AUTH each wait at most this long: a server that
 * accepts the connection but never answers (a plaintext port given a TLS hello) is an
 * error within seconds, not a hang. */
#define DIAL_STEP_S  2
#define PASSWORD_MAX 1024

#if HIREDIS_MAJOR < 1
#error "codeq needs hiredis 1.x with TLS (scripts/build-hiredis), not Debian 12's 0.14"
#endif

struct cq_redis_dialer {
    char host[200];
    int port;
    char user[128]; /* "" : AUTH with the password alone, as Redis's user 'default' */
    char password[256];
    char password_file[512];
    SSL_CTX *tls;          /* NULL: plaintext */
    char server_name[256]; /* the name the certificate must carry */
};

/* OpenSSL's reason for the last failure, and its queue emptied. */
static const char *openssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return reason != NULL ? reason : "unknown OpenSSL error";
}

/* A file setting that must be readable: the errno says more than OpenSSL would. */
static int readable(const char *setting, const char *path, struct cq_error *err)
{
    if (access(path, R_OK) < 0)
        return cq_error_sys(err, errno, "%s %s", setting, path);
    return 0;
}

static int tls_context(struct cq_redis_dialer *d, const struct cq_fleet_config *cfg,
                       struct cq_error *err)
{
    ERR_clear_error();
    d->tls = SSL_CTX_new(TLS_client_method());
    if (d->tls == NULL)
        return cq_error_set(err, CQ_EINTERNAL, "create a TLS context: %s", openssl_reason());
    /* Redis 6 and later speak TLS 1.2 and 1.3; nothing older is worth accepting. */
    SSL_CTX_set_min_proto_version(d->tls, TLS1_2_VERSION);
    SSL_CTX_set_verify(d->tls, SSL_VERIFY_PEER, NULL);
    if (cfg->redis_tls_ca[0] != '\0') {
        if (readable("redis_tls_ca", cfg->redis_tls_ca, err) < 0)
            return -1;
        if (SSL_CTX_load_verify_locations(d->tls, cfg->redis_tls_ca, NULL) != 1)
            return cq_error_set(err, CQ_EINVALID, "redis_tls_ca %s: %s", cfg->redis_tls_ca,
                                openssl_reason());
    } else if (SSL_CTX_set_default_verify_paths(d->tls) != 1) {
        return cq_error_set(err, CQ_EINTERNAL, "load the system's CA certificates: %s",
                            openssl_reason());
    }
    if (cfg->redis_tls_cert[0] != '\0') {
        if (readable("redis_tls_cert", cfg->redis_tls_cert, err) < 0 ||
            readable("redis_tls_key", cfg->redis_tls_key, err) < 0)
            return -1;
        if (SSL_CTX_use_certificate_chain_file(d->tls, cfg->redis_tls_cert) != 1)
            return cq_error_set(err, CQ_EINVALID, "redis_tls_cert %s: %s", cfg->redis_tls_cert,
                                openssl_reason());
        if (SSL_CTX_use_PrivateKey_file(d->tls, cfg->redis_tls_key, SSL_FILETYPE_PEM) != 1)
            return cq_error_set(err, CQ_EINVALID, "redis_tls_key %s: %s", cfg->redis_tls_key,
                                openssl_reason());
        if (SSL_CTX_check_private_key(d->tls) != 1)
            return cq_error_set(err, CQ_EINVALID, "redis_tls_key %s is not the key of %s",
                                cfg->redis_tls_key, cfg->redis_tls_cert);
    }
    return 0;
}

int cq_redis_dialer_new(const struct cq_fleet_config *cfg, const char *host, int port,
                        struct cq_redis_dialer **out, struct cq_error *err)
{
    cq_autofree struct cq_redis_dialer *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return cq_error_sys(err, ENOMEM, "allocate the Redis dialer");
    snprintf(d->host, sizeof(d->host), "%s", host);
    d->port = port;
    snprintf(d->user, sizeof(d->user), "%s", cfg->redis_user);
    snprintf(d->password_file, sizeof(d->password_file), "%s", cfg->redis_password_file);
    snprintf(d->server_name, sizeof(d->server_name), "%s",
             cfg->redis_tls_server_name[0] != '\0' ? cfg->redis_tls_server_name : host);
    /* A missing or unreadable password file is a setting's mistake: said at start,
     * not first at a reconnect. */
    if (d->password_file[0] != '\0' && readable("redis_password_file", d->password_file, err) < 0)
        return -1;
    snprintf(d->password, sizeof(d->password), "%s", cfg->redis_password);
    if (strcmp(cfg->redis_tls, "on") == 0 && tls_context(d, cfg, err) < 0) {
        cq_redis_dialer_free(cq_steal_ptr(&d));
        return -1;
    }
    *out = cq_steal_ptr(&d);
    return 0;
}

void cq_redis_dialer_free(struct cq_redis_dialer *d)
{
    if (d == NULL)
        return;
    if (d->tls != NULL)
        SSL_CTX_free(d->tls);
    explicit_bzero(d->password, sizeof(d->password));
    free(d);
}

static int start_tls(struct cq_redis_dialer *d, redisContext *c, struct cq_error *err)
{
    ERR_clear_error();
    SSL *ssl = SSL_new(d->tls);
    if (ssl == NULL)
        return cq_error_set(err, CQ_EINTERNAL, "TLS with Redis at %s:%d: %s", d->host, d->port,
                            openssl_reason());
    /* An address is matched against the certificate's IP entries and is not sent as
     * SNI (RFC 6066 names hosts only); a name is both. */
    unsigned char addr[16];
    bool ip = inet_pton(AF_INET, d->server_name, addr) == 1 ||
              inet_pton(AF_INET6, d->server_name, addr) == 1;
    int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), d->server_name)
                : SSL_set_tlsext_host_name(ssl, d->server_name) == 1 &&
                      SSL_set1_host(ssl, d->server_name) == 1;
    if (ok != 1) {
        SSL_free(ssl);
        return cq_error_set(err, CQ_EINVALID, "redis_tls_server_name '%s': %s", d->server_name,
                            openssl_reason());
    }
    if (redisInitiateSSL(c, ssl) == REDIS_OK)
        return 0; /* the context owns ssl now */
    long verify = SSL_get_verify_result(ssl);
    SSL_free(ssl);
    ERR_clear_error();
    if (verify != X509_V_OK)
        return cq_error_set(err, CQ_EPROTO,
                            "TLS handshake with Redis at %s:%d failed: certificate verify "
                            "failed: %s (the certificate must chain to redis_tls_ca and name "
                            "'%s')",
                            d->host, d->port, X509_verify_cert_error_string(verify),
                            d->server_name);
    /* hiredis words a failure OpenSSL gave no reason for (no answer before the
     * timeout, as from a plaintext port) as "(null)". */
    const char *why = c->errstr[0] == '\0' || strstr(c->errstr, "(null)") != NULL
                          ? "no TLS answer from the server"
                          : c->errstr;
    return cq_error_set(err, CQ_EPROTO,
                        "TLS handshake with Redis at %s:%d failed: %s (is that Redis's TLS "
                        "port, and does it take this client's certificate?)",
                        d->host, d->port, why);
}

/* The reply to the connection's first command, or NULL and err. An I/O failure there
 * on a plaintext connection is most often a TLS-only port, which drops clients that
 * do not start with a TLS hello: said so, since "connection closed" alone is a riddle. */
static redisReply *first_command(struct cq_redis_dialer *d, redisContext *c, int argc,
                                 const char **argv, const size_t *lens, struct cq_error *err)
{
    redisReply *r = redisCommandArgv(c, argc, argv, lens);
    if (r != NULL)
        return r;
    if (d->tls == NULL)
        cq_error_set(err, CQ_EPROTO,
                     "Redis at %s:%d closed the connection at the first command (%s): if it "
                     "takes TLS only, set redis_tls = on",
                     d->host, d->port, c->errstr[0] ? c->errstr : "no reply");
    else
        cq_error_set(err, CQ_EPROTO, "Redis at %s:%d: %s", d->host, d->port,
                     c->errstr[0] ? c->errstr : "connection lost");
    return NULL;
}

static int read_password(const struct cq_redis_dialer *d, char *out, size_t len,
                         struct cq_error *err)
{
    ssize_t n = cq_read_file_at(AT_FDCWD, d->password_file, out, len, err);
    if (n < 0)
        return cq_error_prefix(err, "redis_password_file");
    if ((size_t)n == len - 1)
        return cq_error_set(err, CQ_EINVALID, "redis_password_file %s: longer than %zu bytes",
                            d->password_file, len - 2);
    /* The file's line end is not part of the password (echo and editors add one). */
    if (n > 0 && out[n - 1] == '\n')
        out[--n] = '\0';
    if (n > 0 && out[n - 1] == '\r')
        out[--n] = '\0';
    if (n == 0)
        return cq_error_set(err, CQ_EINVALID, "redis_password_file %s is empty", d->password_file);
    return 0;
}

/* AUTH when a password is set, else PING: either way the connection has answered
 * once before it is used, and a server that wants a password says so here. */
static int authenticate(struct cq_redis_dialer *d, redisContext *c, struct cq_error *err)
{
    char from_file[PASSWORD_MAX + 2];
    const char *password = d->password;
    if (d->password_file[0] != '\0') {
        if (read_password(d, from_file, sizeof(from_file), err) < 0)
            return -1;
        password = from_file;
    }
    const char *user = d->user[0] != '\0' ? d->user : "default";
    const char *argv[3] = {"AUTH", user, password};
    size_t lens[3] = {4, strlen(user), strlen(password)};
    redisReply *r = password[0] != '\0'
                        ? first_command(d, c, 3, argv, lens, err)
                        : first_command(d, c, 1, (const char *[]){"PING"}, (size_t[]){4}, err);
    explicit_bzero(from_file, sizeof(from_file));
    if (r == NULL)
        return -1;
    int rc = 0;
    if (r->type == REDIS_REPLY_ERROR && password[0] == '\0' && strncmp(r->str, "NOAUTH", 6) == 0)
        rc = cq_error_set(err, CQ_EINVALID,
                          "Redis at %s:%d wants a password (%s): set redis_password_file or "
                          "redis_password, and redis_user for an ACL user",
                          d->host, d->port, r->str);
    else if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "WRONGPASS", 9) == 0)
        rc =
            cq_error_set(err, CQ_EINVALID, "Redis at %s:%d refused the password for user '%s' (%s)",
                         d->host, d->port, user, r->str);
    else if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "LOADING", 7) == 0)
        /* A restarted Redis reading its data back: not up yet (retried as an outage). */
        rc = cq_error_set(err, CQ_EINTERNAL, "Redis at %s:%d: %s", d->host, d->port, r->str);
    else if (r->type == REDIS_REPLY_ERROR)
        rc = cq_error_set(err, CQ_EINVALID, "Redis at %s:%d refused %s for user '%s': %s", d->host,
                          d->port, password[0] != '\0' ? "AUTH" : "PING", user, r->str);
    freeReplyObject(r);
    return rc;
}

redisContext *cq_redis_dial(struct cq_redis_dialer *d, int command_timeout_s, struct cq_error *err)
{
    struct timeval step = {.tv_sec = DIAL_STEP_S};
    redisContext *c = redisConnectWithTimeout(d->host, d->port, step);
    if (c == NULL || c->err != 0) {
        cq_error_set(err, CQ_EINTERNAL, "cannot reach Redis at %s:%d: %s", d->host, d->port,
                     c != NULL ? c->errstr : "out of memory");
        redisFree(c);
        return NULL;
    }
    if (redisSetTimeout(c, step) != REDIS_OK) {
        cq_error_set(err, CQ_EINTERNAL, "Redis at %s:%d: %s", d->host, d->port, c->errstr);
        goto fail;
    }
    if ((d->tls != NULL && start_tls(d, c, err) < 0) || authenticate(d, c, err) < 0)
        goto fail;
    /* Commands then block at most this long: a hung Redis becomes an error. */
    struct timeval command = {.tv_sec = command_timeout_s};
    redisSetTimeout(c, command);
    return c;
fail:
    redisFree(c);
    return NULL;
}
