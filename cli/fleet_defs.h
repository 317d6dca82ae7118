/* cli/fleet_defs.h - `codeq interpreter ... --fleet CONF` and `codeq runtime push|list|
 * show|rm --fleet CONF`: code interpreters and runtimes defined in a fleet's Redis
 * (fleet/interpreters.h), for every worker (docs/fleet.md, "Code interpreters in the
 * fleet"). CONF is the daemons' configuration file (with the CODEQ_* environment over
 * it, as the daemons read it); its redis settings say where. */
#ifndef CQ_CLI_FLEET_DEFS_H
#define CQ_CLI_FLEET_DEFS_H

#include <stdbool.h>

/* def_json: a definition as cq_interpreter_def_parse() reads it (validated here). Each
 * returns the exit status and prints what the local commands print. */
int cq_fleet_interpreter_create(const char *conf, const char *def_json, bool replace);
int cq_fleet_interpreter_list(const char *conf);
int cq_fleet_interpreter_get(const char *conf, const char *name);
int cq_fleet_interpreter_delete(const char *conf, const char *name);

/* Pushes the runtime of the spec at spec_path. By default it is built here (into
 * store, as codeq runtime build), packed and uploaded to the fleet's layer cache, so
 * the workers fetch it and need neither the packages nor an index. With
 * build_on_workers only the spec and the build options are recorded, and the first
 * worker that needs the runtime builds it (the wheelhouse is then a path on the
 * workers). */
int cq_fleet_runtime_push(const char *conf, const char *spec_path, const char *wheelhouse,
                          const char *index_url, const char *store, bool build_on_workers);
int cq_fleet_runtime_list(const char *conf);
int cq_fleet_runtime_show(const char *conf, const char *name);
int cq_fleet_runtime_rm(const char *conf, const char *name);

#endif
