/* What each rank sees and where it sits: the start-up line, the table of
 * `moerun topo`, and its JSON.  See topology.h. */
#include <stdio.h>
#include <string.h>

#include "topology/topology-internal.h"

static const char *const kind_names[MR_GROUP_KIND_COUNT] = {"tensor", "pipeline", "data", "expert"};

static int nodes_alike(const mr_topo_node *a, const mr_topo_node *b) {
    return a->cores == b->cores && a->pus == b->pus && a->n_numa == b->n_numa && a->n_gpus == b->n_gpus &&
           a->n_nics == b->n_nics;
}

static size_t node_line(const mr_topo_node *nd, char *buf, size_t n) {
    size_t o = (size_t)snprintf(buf, n, "%d cores (%d PUs), %d NUMA node%s, ", nd->cores, nd->pus, nd->n_numa,
                                nd->n_numa == 1 ? "" : "s");
    if (nd->n_gpus)
        o += (size_t)snprintf(buf + o, n > o ? n - o : 0, "%d GPU%s (%s), ", nd->n_gpus, nd->n_gpus == 1 ? "" : "s",
                              nd->gpus[0].model[0] ? nd->gpus[0].model : nd->gpus[0].name);
    else
        o += (size_t)snprintf(buf + o, n > o ? n - o : 0, "no GPU, ");
    if (!nd->n_nics) return o + (size_t)snprintf(buf + o, n > o ? n - o : 0, "no NIC");
    o += (size_t)snprintf(buf + o, n > o ? n - o : 0, "NIC%s", nd->n_nics == 1 ? "" : "s");
    for (int i = 0; i < nd->n_nics && i < 4; i++)
        o += (size_t)snprintf(buf + o, n > o ? n - o : 0, "%s %s", i ? "," : "", nd->nics[i].name);
    if (nd->n_nics > 4) o += (size_t)snprintf(buf + o, n > o ? n - o : 0, ", ...");
    return o;
}

void mr_topo_summary(const mr_topo *t, const mr_topo_placement *pl, char *buf, size_t n) {
    int alike = 1;
    for (int i = 1; i < t->n_nodes; i++) alike &= nodes_alike(&t->nodes[0], &t->nodes[i]);
    size_t o = (size_t)snprintf(buf, n, "topology: %d node%s", t->n_nodes, t->n_nodes == 1 ? "" : "s");
    if (alike) {
        for (int i = 0; i < t->n_nodes && i < 8; i++)
            o += (size_t)snprintf(buf + o, n > o ? n - o : 0, "%s%s", i ? ", " : " (", t->nodes[i].host);
        o += (size_t)snprintf(buf + o, n > o ? n - o : 0, "%s), %d rank%s; %s", t->n_nodes > 8 ? ", ..." : "",
                              t->world, t->world == 1 ? "" : "s", t->n_nodes > 1 ? "each node: " : "");
        o += node_line(&t->nodes[0], buf + o, n > o ? n - o : 0);
    } else {
        o += (size_t)snprintf(buf + o, n > o ? n - o : 0, ", %d ranks", t->world);
        for (int i = 0; i < t->n_nodes && i < 8; i++) {
            o += (size_t)snprintf(buf + o, n > o ? n - o : 0, "; %s: ", t->nodes[i].host);
            o += node_line(&t->nodes[i], buf + o, n > o ? n - o : 0);
        }
        if (t->n_nodes > 8) o += (size_t)snprintf(buf + o, n > o ? n - o : 0, "; ...");
    }
    if (!pl || t->n_nodes == 1) return;
    o += (size_t)snprintf(buf + o, n > o ? n - o : 0, "; groups spanning nodes:");
    for (int g = 0; g < MR_GROUP_KIND_COUNT; g++)
        o += (size_t)snprintf(buf + o, n > o ? n - o : 0, " %s %d/%d", kind_names[g], pl->span[g].split,
                              pl->span[g].groups);
    if (pl->reordered)
        o += (size_t)snprintf(buf + o, n > o ? n - o : 0, "; ranks renumbered so that each node holds neighbouring plan ranks");
}

static const char *gpu_name(const mr_topo *t, const mr_topo_slot *s) {
    return s->gpu >= 0 ? t->nodes[t->ranks[s->world_rank].node].gpus[s->gpu].name : "-";
}
static const char *nic_name(const mr_topo *t, const mr_topo_slot *s) {
    return s->nic >= 0 ? t->nodes[t->ranks[s->world_rank].node].nics[s->nic].name : "-";
}
static int numa_os(const mr_topo *t, const mr_topo_slot *s) {
    return s->numa >= 0 ? t->nodes[t->ranks[s->world_rank].node].numa[s->numa].os_index : -1;
}

void mr_topo_print(const mr_topo *t, const mr_plan *plan, const mr_topo_placement *pl, FILE *f) {
    char line[1024];
    fprintf(f, "%d node%s, %d ranks\n", t->n_nodes, t->n_nodes == 1 ? "" : "s", t->world);
    for (int i = 0; i < t->n_nodes; i++) {
        node_line(&t->nodes[i], line, sizeof line);
        int ranks = 0;
        for (int r = 0; r < t->world; r++) ranks += t->ranks[r].node == i;
        fprintf(f, "  node %d %s: %d ranks; %s; CPUs %s\n", i, t->nodes[i].host, ranks, line, t->nodes[i].cpus);
        for (int g = 0; g < t->nodes[i].n_gpus; g++) {
            const mr_topo_gpu *gp = &t->nodes[i].gpus[g];
            fprintf(f, "    %-8s %-13s NUMA %-2d CPUs %-20s NIC %s\n", gp->name, gp->busid[0] ? gp->busid : "-",
                    gp->numa >= 0 ? t->nodes[i].numa[gp->numa].os_index : -1, gp->cpus,
                    gp->nic >= 0 ? t->nodes[i].nics[gp->nic].name : "-");
        }
    }
    fprintf(f, "%-5s %-5s %-12s %-5s %-8s %-4s %-20s %-6s %-9s %-4s %-4s %-6s %-6s %s\n", "plan", "mpi", "host",
            "local", "gpu", "numa", "cpus", "shared", "nic", "data", "pipe", "tensor", "expert", "bound at start");
    for (int r = 0; r < pl->world; r++) {
        const mr_topo_slot *s = &pl->slots[r];
        const mr_topo_rank *k = &t->ranks[s->world_rank];
        mr_rank_coords c = mr_plan_coords(plan, r);
        char ex[32];
        snprintf(ex, sizeof ex, "%d.%d", c.expert_group, c.expert_i);
        fprintf(f, "%-5d %-5d %-12s %-5d %-8s %-4d %-20s %-6d %-9s %-4d %-4d %-6d %-6s %s\n", r, s->world_rank,
                t->nodes[k->node].host, k->local_rank, gpu_name(t, s), numa_os(t, s), s->cpus, s->shared,
                nic_name(t, s), c.data_i, c.pipe_i, c.tensor_i, ex, k->bound);
    }
    for (int g = 0; g < MR_GROUP_KIND_COUNT; g++)
        fprintf(f, "%s groups: %d, %d spanning nodes (at most %d nodes)\n", kind_names[g], pl->span[g].groups,
                pl->span[g].split, pl->span[g].max_nodes);
    if (pl->reordered) fprintf(f, "ranks renumbered: plan rank r runs on MPI rank 'mpi'\n");
    if (pl->warning[0]) fprintf(f, "warning: %s\n", pl->warning);
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", *s);
        else fputc(*s, f);
    }
    fputc('"', f);
}

void mr_topo_print_json(const mr_topo *t, const mr_plan *plan, const mr_topo_placement *pl,
                        const char *const *allowed, FILE *f) {
    fprintf(f, "{\"nodes\": [");
    for (int i = 0; i < t->n_nodes; i++) {
        const mr_topo_node *nd = &t->nodes[i];
        fprintf(f, "%s\n  {\"host\": ", i ? "," : "");
        json_str(f, nd->host);
        fprintf(f, ", \"cores\": %d, \"pus\": %d, \"cpus\": \"%s\", \"numa\": [", nd->cores, nd->pus, nd->cpus);
        for (int k = 0; k < nd->n_numa; k++)
            fprintf(f, "%s{\"os_index\": %d, \"cores\": %d, \"cpus\": \"%s\"}", k ? ", " : "", nd->numa[k].os_index,
                    nd->numa[k].cores, nd->numa[k].cpus);
        fprintf(f, "], \"gpus\": [");
        for (int k = 0; k < nd->n_gpus; k++) {
            const mr_topo_gpu *g = &nd->gpus[k];
            fprintf(f, "%s{\"name\": ", k ? ", " : "");
            json_str(f, g->name);
            fprintf(f, ", \"bus\": \"%s\", \"model\": ", g->busid);
            json_str(f, g->model);
            fprintf(f, ", \"numa\": %d, \"cpus\": \"%s\", \"nic\": %d}", g->numa, g->cpus, g->nic);
        }
        fprintf(f, "], \"nics\": [");
        for (int k = 0; k < nd->n_nics; k++) {
            const mr_topo_nic *c = &nd->nics[k];
            fprintf(f, "%s{\"name\": ", k ? ", " : "");
            json_str(f, c->name);
            fprintf(f, ", \"netdev\": ");
            json_str(f, c->netdev);
            fprintf(f, ", \"bus\": \"%s\", \"fabric\": %s, \"numa\": %d}", c->busid, c->fabric ? "true" : "false", c->numa);
        }
        fprintf(f, "]}");
    }
    fprintf(f, "],\n \"ranks\": [");
    for (int r = 0; r < pl->world; r++) {
        const mr_topo_slot *s = &pl->slots[r];
        const mr_topo_rank *k = &t->ranks[s->world_rank];
        mr_rank_coords c = mr_plan_coords(plan, r);
        fprintf(f,
                "%s\n  {\"plan_rank\": %d, \"mpi_rank\": %d, \"node\": %d, \"local_rank\": %d, \"pid\": %d, "
                "\"gpu\": %d, \"gpu_name\": ",
                r ? "," : "", r, s->world_rank, k->node, k->local_rank, k->pid, s->gpu);
        json_str(f, gpu_name(t, s));
        fprintf(f, ", \"numa\": %d, \"cpus\": \"%s\", \"cores\": %d, \"shared\": %d, \"nic\": %d, \"nic_name\": ",
                numa_os(t, s), s->cpus, s->cores, s->shared, s->nic);
        json_str(f, nic_name(t, s));
        fprintf(f,
                ", \"bound_at_start\": \"%s\", \"data\": %d, \"pipeline\": %d, \"tensor\": %d, \"expert_group\": %d, "
                "\"expert_index\": %d",
                k->bound, c.data_i, c.pipe_i, c.tensor_i, c.expert_group, c.expert_i);
        if (allowed) fprintf(f, ", \"cpus_allowed\": \"%s\"", allowed[r]);
        fputc('}', f);
    }
    fprintf(f, "],\n \"groups\": {");
    for (int g = 0; g < MR_GROUP_KIND_COUNT; g++)
        fprintf(f, "%s\"%s\": {\"groups\": %d, \"spanning_nodes\": %d, \"max_nodes\": %d}", g ? ", " : "", kind_names[g],
                pl->span[g].groups, pl->span[g].split, pl->span[g].max_nodes);
    fprintf(f, "},\n \"reordered\": %s, \"warning\": ", pl->reordered ? "true" : "false");
    json_str(f, pl->warning);
    fprintf(f, "}\n");
}
