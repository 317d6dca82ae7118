/* cli/cmd_audit.c - `codeq audit verify`: where an audit log's chains break. */
#define _GNU_SOURCE
#include "cli/cli.h"
#include "common/cleanup.h"
#include "fleet/audit.h"
#include "fleet/config.h"
#include "fleet/kafka.h"

#include <getopt.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: codeq audit verify [--key-file FILE] (PATH | - | --topic TOPIC [--brokers "
            "LIST])\n"
            "\n"
            "Checks an audit log (docs/security.md, \"Audit log\"): the JSON lines of a file\n"
            "(codeq exec/mcp --audit-log), of stdin, or of the fleet's audit topic (read from\n"
            "its start to its end). Each producer's records must be numbered from 0 without\n"
            "a gap, each must carry the SHA-256 of the one before it, and, with the key, the\n"
            "signature that ends it. Prints the records checked, or where the first chain\n"
            "breaks (a record edited, deleted, reordered or forged) and exits 1.\n"
            "\n"
            "  --key-file FILE  the audit key (the daemons' audit_key_file): also check\n"
            "                   every record's signature\n"
            "  --topic TOPIC    read the fleet's audit topic (codeq.audit by default)\n"
            "  --brokers LIST   Kafka bootstrap servers (CODEQ_BROKERS)\n"
            "  -h, --help       show this help\n");
}

/* The topic's one partition, from its start to its end as of now, into a memory file. */
static int read_topic(const char *brokers, const char *topic, FILE **out, char **buf, size_t *len,
                      struct cq_error *err)
{
    struct cq_fleet_config cfg;
    cq_fleet_config_init(&cfg);
    snprintf(cfg.brokers, sizeof(cfg.brokers), "%s", brokers);
    rd_kafka_t *rk;
    if (cq_kafka_reader(&cfg, topic, &rk, err) < 0)
        return -1;
    int64_t low = 0, high = 0;
    rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(rk, topic, 0, &low, &high, 10000);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_destroy(rk);
        return cq_error_set(err, CQ_EINVALID, "read %s: %s", topic, rd_kafka_err2str(e));
    }
    FILE *f = open_memstream(buf, len);
    int64_t next = low;
    int idle = 0;
    while (next < high && idle < 100) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (m == NULL) {
            idle++;
            continue;
        }
        idle = 0;
        if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            fwrite(m->payload, 1, m->len, f);
            fputc('\n', f);
            next = m->offset + 1;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    fflush(f);
    if (next < high) {
        fclose(f);
        free(*buf);
        return cq_error_set(err, CQ_ETIMEOUT, "read %s: stopped at offset %lld of %lld", topic,
                            (long long)next, (long long)high);
    }
    rewind(f);
    *out = f;
    return 0;
}

int cq_cmd_audit(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"key-file", required_argument, NULL, 'k'},
        {"topic", required_argument, NULL, 't'},
        {"brokers", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *key_file = NULL, *topic = NULL, *brokers = getenv("CODEQ_BROKERS");
    opterr = 0;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(stdout);
            return 0;
        case 'k':
            key_file = optarg;
            break;
        case 't':
            topic = optarg;
            break;
        case 'b':
            brokers = optarg;
            break;
        default:
            return cq_usage_error("audit", "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc || strcmp(argv[optind], "verify") != 0)
        return cq_usage_error("audit", "the subcommand is verify");
    optind++;
    const char *path = optind < argc ? argv[optind] : NULL;
    if ((path == NULL) == (topic == NULL) || optind + 1 < argc)
        return cq_usage_error("audit", "verify reads one log: a PATH, - or --topic TOPIC");
    if (topic != NULL && (brokers == NULL || brokers[0] == '\0'))
        return cq_usage_error("audit", "--topic needs --brokers (or CODEQ_BROKERS)");
    struct cq_error err;
    char key[CQ_AUDIT_KEY_LEN + 1];
    if (key_file != NULL && cq_audit_read_key(key_file, key, &err) < 0) {
        fprintf(stderr, "codeq audit: %s\n", err.msg);
        return CQ_EXIT_USAGE;
    }
    FILE *in = NULL;
    cq_autofree char *buf = NULL;
    size_t len = 0;
    if (topic != NULL) {
        if (read_topic(brokers, topic, &in, &buf, &len, &err) < 0) {
            fprintf(stderr, "codeq audit: %s\n", err.msg);
            return CQ_EXIT_INTERNAL;
        }
    } else if (strcmp(path, "-") == 0) {
        in = stdin;
    } else if ((in = fopen(path, "re")) == NULL) {
        fprintf(stderr, "codeq audit: open %s: %s\n", path, strerror(errno));
        return CQ_EXIT_INTERNAL;
    }
    long n = cq_audit_verify(in, key_file != NULL ? key : NULL, &err);
    if (in != stdin)
        fclose(in);
    explicit_bzero(key, sizeof(key));
    if (n < 0) {
        fprintf(stderr, "codeq audit: the chain breaks at %s\n", err.msg);
        return 1;
    }
    printf("%ld records checked: every chain is whole%s\n", n,
           key_file != NULL ? " and every signature valid" : " (signatures not checked: no key)");
    return 0;
}
