/* cli/out_dir.h - `codeq exec --out DIR`: write what sandboxed code produced (its
 * images, its workspace files) into a host directory, as host root, without letting
 * the code choose where or how much. The design and the threat are in out_dir.c. */
#ifndef CQ_CLI_OUT_DIR_H
#define CQ_CLI_OUT_DIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "common/error.h"

struct cq_out_dir_options {
    bool force;         /* --out-force: DIR may be non-empty (nothing in it is replaced) */
    bool dotfiles;      /* --out-dotfiles: save paths with a component starting with '.' */
    uint64_t max_bytes; /* cap on the logical bytes saved; 0: CQ_SANDBOX_DEFAULT_DISK */
};

struct cq_out_dir;

/* Creates path (mode 0700) or opens it if it exists; it must then be an empty real
 * directory, or any real directory with opts->force. Never follows a symlink at path.
 * Every later write goes through the directory fd opened here, never through path.
 * 0, or -1 with err: CQ_EINVALID for a directory the user must change (not empty, a
 * symlink, not a directory), an errno otherwise. */
int cq_out_dir_open(const char *path, const struct cq_out_dir_options *opts,
                    struct cq_out_dir **out, struct cq_error *err);

/* Frees d (NULL is fine) without printing anything. */
void cq_out_dir_close(struct cq_out_dir *d);

/* Whether to read and save the workspace entry at rel (as listed: kind and size come
 * from the sandbox's listing, so they only spare work; cq_out_dir_save checks the
 * bytes it is given). kind is "file", "directory" or anything else (a link, a FIFO:
 * never saved). Returns false, and notes why for cq_out_dir_report, for a dot-path
 * without --out-dotfiles, a file past the cap, or an entry that is not a file or a
 * directory. */
bool cq_out_dir_admit(struct cq_out_dir *d, const char *rel, const char *kind, uint64_t size);

/* rel as a terminal may show it: printable ASCII kept, every other byte as \xNN. */
void cq_out_dir_escape(const char *rel, char *buf, size_t size);

/* Saves data as the file rel (a path chosen by sandboxed code: hostile) below DIR.
 * 1 when it was skipped by policy (a dot-path, an entry already there, past the cap;
 * each noted for cq_out_dir_report); 0 when saved; -1 with err ("<rel>: <why>", rel
 * escaped for a terminal) when it could not be. */
int cq_out_dir_save(struct cq_out_dir *d, const char *rel, const uint8_t *data, size_t len,
                    struct cq_error *err);

/* Prints one line per kind of skip ("codeq: --out: skipped 2 dot-path(s) (.git/,
 * .bashrc); --out-dotfiles saves them") on out. */
void cq_out_dir_report(const struct cq_out_dir *d, FILE *out);

#endif
