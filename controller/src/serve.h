/* `upkeep serve`: the controller daemon. Wires the store, the campaign
 * engine, the chunk server and operator commands to one libuv loop and one
 * MQTT client (upk_mqtt). Runs until SIGINT or SIGTERM. Main thread. */
#ifndef UPKEEP_CONTROLLER_SERVE_H
#define UPKEEP_CONTROLLER_SERVE_H

#include "config.h"
#include "upkeep/err.h"

/* Runs the daemon with cfg (borrowed) until a stop signal; UPK_OK on a clean
 * stop, else the error that prevented starting (store, MQTT set-up). */
UPK_MUST_CHECK upk_err upk_serve_run(const upk_serve_config *cfg);

#endif
