/* runtime/layer.h - a runtime's layer as one byte stream, to carry it between hosts (the
 * fleet's layer cache, docs/fleet.md "Code interpreters in the fleet").
 *
 * The stream is codeq's own, written and read here (no tar: a tar reader must be told
 * not to follow links, restore owners, devices or absolute names, and each of those is
 * a flag that differs between tar implementations; a format with three entry types
 * has nothing to turn off):
 *
 *   "CQLAYER1" digest(64 hex) '\n'
 *   entries: type(1: 'd' directory, 'f' file, 'l' symbolic link) mode(4, big-endian:
 *            permission bits) path_len(2) path  then for 'f' size(8) bytes, for 'l'
 *            target_len(2) target
 *   'E' (the end: a stream without it is truncated)
 *
 * Paths are relative, '/'-separated, without empty, "." or ".." components; a
 * directory comes before what it holds. Unpacking refuses anything else: an absolute
 * path, "..", a path through a link, a link whose target leaves the tree (absolute, or
 * climbing above its root), any other entry type (devices, fifos, sockets), an entry
 * twice, setuid/setgid bits (dropped), and more than max bytes. */
#ifndef CQ_RUNTIME_LAYER_H
#define CQ_RUNTIME_LAYER_H

#include "common/error.h"

#include <stddef.h>
#include <stdint.h>

#define CQ_LAYER_MAGIC "CQLAYER1"

/* Packs the directory dir (the layer of digest) into *out (malloc'd). Refuses entries
 * that are not directories, regular files or links, hard links aside (each name is
 * packed as its own file), and a stream above max bytes (CQ_ELIMIT). */
int cq_layer_pack_dir(const char *dir, const char *digest, uint64_t max, uint8_t **out, size_t *len,
                      struct cq_error *err);
/* Unpacks a stream into the directory dir, which must exist and be empty; the stream's
 * digest must be digest (NULL: any, for tests). On failure dir may hold part of it:
 * unpack into a directory of your own and remove it. */
int cq_layer_unpack_dir(const uint8_t *data, size_t len, const char *digest, const char *dir,
                        struct cq_error *err);

/* The layer the store has for runtime name, packed (cq_layer_pack_dir); digest_out
 * (CQ_RUNTIME_DIGEST_LEN + 1 bytes) gets its digest. */
int cq_layer_pack(const char *store, const char *name, uint64_t max, char *digest_out,
                  uint8_t **out, size_t *len, struct cq_error *err);
/* Installs a stream into the store as the layer of digest, named name: unpacked into
 * STORE/tmp, its manifest checked (its digest is digest, and the spec and artifacts it
 * lists hash to digest: cq_runtime_digest()), then moved to STORE/layers/<digest> in
 * one rename and the name pointed at it. A layer already there is kept. */
int cq_layer_install(const char *store, const char *name, const char *digest, const uint8_t *data,
                     size_t len, struct cq_error *err);

#endif
