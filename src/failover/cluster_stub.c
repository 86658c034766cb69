/*
 * Placeholder of the cluster manager until src/failover/cluster.c lands: no thread, no view.
 * The worker then runs on router_static_view() (every node up, config order).
 */
#include "failover/cluster.h"

#include <stdio.h>

cluster_t *cluster_start(const struct config *cfg, void (*notify)(void *arg), void *arg)
{
	(void)cfg;
	(void)notify;
	(void)arg;
	return NULL;
}

void cluster_view_copy(cluster_t *c, struct cluster_view *out)
{
	(void)c;
	(void)out;
}

bool cluster_wait_discovery(cluster_t *c, uint32_t timeout_ms)
{
	(void)c;
	(void)timeout_ms;
	return false;
}

void cluster_report_backend_error(cluster_t *c, int node)
{
	(void)c;
	(void)node;
}

bool cluster_command(cluster_t *c, enum cluster_command cmd, int node, const char *reason,
		     char *msg, size_t msgcap)
{
	(void)c;
	(void)cmd;
	(void)node;
	(void)reason;
	snprintf(msg, msgcap, "no cluster manager");
	return false;
}

int cluster_history_copy(cluster_t *c, struct cluster_event *out, int cap)
{
	(void)c;
	(void)out;
	(void)cap;
	return 0;
}

bool cluster_update_config(cluster_t *c, const struct config *cfg)
{
	(void)c;
	(void)cfg;
	return true;
}

void cluster_stop(cluster_t *c)
{
	(void)c;
}
