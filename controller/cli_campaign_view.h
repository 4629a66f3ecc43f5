/* The campaign view of `upkeep campaign show` and `watch` (cli_campaign_view.c):
 * rendering a campaign.show reply within a terminal width, the ETA, and what
 * `watch` exits with. One thread. */
#ifndef UPKEEP_CLI_CAMPAIGN_VIEW_H
#define UPKEEP_CLI_CAMPAIGN_VIEW_H

#include <stdbool.h>
#include <stdio.h>

struct cJSON;

/* Prints the view of campaign c (a campaign.show reply). With width > 0 no
 * line is longer than width - 1 characters (long ones are wrapped, so a
 * redraw can move up over exactly the lines printed); 0 = no limit.
 * Returns the number of lines printed. */
int upk_campaign_render(FILE *out, const struct cJSON *c, int width);

/* Seconds until the campaign completes at the rate devices finished so far,
 * with the soak or bake left in the current stage and the soaks of the
 * stages after it; -1 when not running or nothing finished yet. Moves during
 * a soak (the reply's now_ms is the controller's clock). */
double upk_campaign_eta(const struct cJSON *c);

/* What `campaign watch` does with campaign c: *final is true when watching
 * ends (completed, halted, aborted, rolled back, rollback incomplete); the
 * return value is its exit code: 0 completed (or, before the end, running or
 * paused by an operator), 1 halted, aborted, rolling back, rolled back or
 * rollback incomplete. */
int upk_campaign_watch_exit(const struct cJSON *c, bool *final);

/* Width of the terminal on stdout, 80 when unknown. */
int upk_term_width(void);

#endif
