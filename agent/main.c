/* upkeep-agent: parses arguments and the config file, then runs one agent on
 * a libuv loop until SIGTERM or SIGINT. All logic is in upkeep_agent_core. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <MQTTAsync.h>
#include <uv.h>

#include "upkeep/agent.h"
#include "upkeep/log.h"

#ifndef UPK_VERSION
#define UPK_VERSION "0.0.0"
#endif

static void usage(FILE *out)
{
    fprintf(out, "usage: upkeep-agent [-c PATH] [-l LEVEL] [--check-config]\n"
                 "       upkeep-agent --help | --version\n"
                 "\n"
                 "The upkeep device agent: applies signed, staged updates sent by the\n"
                 "upkeep controller over MQTT, and rolls back when a health check fails.\n"
                 "\n"
                 "  -c, --config PATH  config file (default " UPK_AGENT_CONFIG_DEFAULT ")\n"
                 "  -l, --log LEVEL    debug, info, warn or error (default info)\n"
                 "  --check-config     validate the config file and exit\n"
                 "  -h, --help         this text\n"
                 "  -V, --version      print the version\n"
                 "\n"
                 "Every config field is described in docs/agent.md.\n"
                 "Exit status: 0 after a clean stop, 1 on a runtime error, 2 on bad\n"
                 "arguments or a bad config.\n");
}

typedef struct run_ctx {
    uv_loop_t *loop;
    upk_agent *agent;
    uv_signal_t sigterm, sigint;
    uv_timer_t bound; /* UPK_AGENT_STOP_BOUND_MS after a stop signal */
    bool bound_armed;
    bool stopping;
} run_ctx;

static void agent_closed(void *userdata)
{
    run_ctx *r = userdata;
    r->agent = NULL;
    uv_close((uv_handle_t *)&r->sigterm, NULL);
    uv_close((uv_handle_t *)&r->sigint, NULL);
    if (r->bound_armed)
        uv_close((uv_handle_t *)&r->bound, NULL);
}

/* The agent did not finish closing within the bound (work in the thread
 * pool, or an MQTT library waiting on a dead connection): the journal and
 * the outbox are on disk, so leave now, as a power cut would. */
static void on_stop_bound(uv_timer_t *t)
{
    (void)t;
    upk_warn("stopped without a clean disconnect: not done within %u ms of the signal; the "
             "outbox and journal are on disk",
             (unsigned)UPK_AGENT_STOP_BOUND_MS);
    _exit(0);
}

static void on_signal(uv_signal_t *s, int signum)
{
    run_ctx *r = s->data;
    if (r->stopping)
        return;
    r->stopping = true;
    upk_info("stopping on signal %d", signum);
    if (uv_timer_init(r->loop, &r->bound) == 0) {
        r->bound_armed = true;
        if (uv_timer_start(&r->bound, on_stop_bound, UPK_AGENT_STOP_BOUND_MS, 0) != 0)
            upk_warn("cannot arm the stop bound; stopping without it");
        uv_unref((uv_handle_t *)&r->bound); /* never what keeps the loop alive */
    }
    upk_agent_close(r->agent, agent_closed, r);
}

int main(int argc, char **argv)
{
    const char *cfg_path = UPK_AGENT_CONFIG_DEFAULT;
    bool check_only = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            printf("upkeep-agent %s\n", UPK_VERSION);
            return 0;
        }
        if (strcmp(a, "--check-config") == 0) {
            check_only = true;
        } else if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) && i + 1 < argc) {
            cfg_path = argv[++i];
        } else if ((strcmp(a, "-l") == 0 || strcmp(a, "--log") == 0) && i + 1 < argc) {
            int lvl = upk_log_level_parse(argv[++i]);
            if (lvl < 0) {
                fprintf(stderr, "upkeep-agent: unknown log level '%s'\n", argv[i]);
                return 2;
            }
            upk_log_set_level((upk_log_level)lvl);
        } else {
            fprintf(stderr, "upkeep-agent: unknown argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }

    upk_agent_config cfg;
    char eb[512];
    upk_err err = upk_agent_config_load(cfg_path, &cfg, eb, sizeof(eb));
    if (err != UPK_OK) {
        fprintf(stderr, "upkeep-agent: bad config %s: %s\n", cfg_path, eb);
        return 2;
    }
    if (check_only) {
        printf("%s: ok (device %s, module %s, %zu pinned key(s), %s)\n", cfg_path, cfg.device_id,
               cfg.module, upk_keyring_count(cfg.keyring),
               cfg.has_link_key ? "link key" : "no link key: legacy mode");
        upk_agent_config_cleanup(&cfg);
        return 0;
    }
    (void)signal(SIGPIPE, SIG_IGN);
    /* OpenSSL 3 initialises itself when a TLS connection first needs it;
     * leaving it to do so keeps an agent on a plain tcp:// broker from
     * paying several MiB of resident memory for a TLS stack it never uses. */
    MQTTAsync_init_options init = MQTTAsync_init_options_initializer;
    init.do_openssl_init = 0;
    MQTTAsync_global_init(&init);

    int rc = 1;
    run_ctx r;
    memset(&r, 0, sizeof(r));
    r.loop = uv_default_loop();
    err = upk_agent_new(r.loop, &cfg, &r.agent);
    if (err != UPK_OK) {
        upk_error("device=%s cannot start the agent: %s", cfg.device_id, upk_err_str(err));
        rc = err == UPK_E_CONFIG_INVALID ? 2 : 1;
        goto out_cfg;
    }
    r.sigterm.data = &r;
    r.sigint.data = &r;
    if (uv_signal_init(r.loop, &r.sigterm) != 0 || uv_signal_init(r.loop, &r.sigint) != 0 ||
        uv_signal_start(&r.sigterm, on_signal, SIGTERM) != 0 ||
        uv_signal_start(&r.sigint, on_signal, SIGINT) != 0) {
        upk_error("device=%s cannot install signal handlers", cfg.device_id);
        goto out_agent;
    }
    err = upk_agent_start(r.agent);
    if (err != UPK_OK) {
        upk_error("device=%s cannot start: %s", cfg.device_id, upk_err_str(err));
        goto out_agent;
    }
    upk_info("device=%s upkeep-agent %s running (module %s)", cfg.device_id, UPK_VERSION,
             cfg.module);
    (void)uv_run(r.loop, UV_RUN_DEFAULT);
    rc = 0;
    goto out_loop;
out_agent:
    if (!r.stopping) {
        r.stopping = true;
        upk_agent_close(r.agent, agent_closed, &r);
    }
    (void)uv_run(r.loop, UV_RUN_DEFAULT);
out_loop:
    (void)uv_loop_close(r.loop);
out_cfg:
    upk_agent_config_cleanup(&cfg);
    return rc;
}
