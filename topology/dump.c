/* The topology as a text file that reloads to the same mr_topo:
 *
 *   moerun-topology 1
 *   nodes 2 world 16
 *   node 0 host n1 cores 112 pus 224 cpus 0-223
 *   core-pus 0,112 1,113 ...              (each core's PUs, in core order)
 *   numa 0 os 0 cores 56 cpus 0-55,112-167
 *   gpu 0 name cuda0 bus 0000:1b:00.0 numa 0 nic 0 cpus 0-55,112-167 model NVIDIA H100 80GB HBM3
 *   nic 0 name mlx5_0 netdev ibp24s0 bus 0000:18:00.0 fabric 1 numa 0
 *   rank 0 node 0 local 0 of 8 pid 4242 bound 0-223
 *
 * numa/gpu/nic lines belong to the node line above them; "-" is an empty
 * string.  Lines starting with '#' are comments. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "topology/topology-internal.h"

static const char *dash(const char *s) { return s[0] ? s : "-"; }

mr_status mr_topo_dump(const mr_topo *t, FILE *f) {
    fprintf(f, "moerun-topology 1\nnodes %d world %d\n", t->n_nodes, t->world);
    for (int n = 0; n < t->n_nodes; n++) {
        const mr_topo_node *nd = &t->nodes[n];
        fprintf(f, "node %d host %s cores %d pus %d cpus %s\ncore-pus", n, nd->host, nd->cores, nd->pus, nd->cpus);
        hwloc_bitmap_t s = hwloc_bitmap_alloc();
        for (int c = 0;; c++) {
            hwloc_bitmap_zero(s);
            for (int pu = 0; pu < MR_TOPO_MAX_PUS; pu++)
                if (nd->pu_core[pu] == c) hwloc_bitmap_set(s, (unsigned)pu);
            if (hwloc_bitmap_iszero(s)) break;
            char list[MR_TOPO_SET];
            mr_topo_set_string(s, list);
            fprintf(f, " %s", list);
        }
        hwloc_bitmap_free(s);
        fputc('\n', f);
        for (int i = 0; i < nd->n_numa; i++)
            fprintf(f, "numa %d os %d cores %d cpus %s\n", i, nd->numa[i].os_index, nd->numa[i].cores,
                    nd->numa[i].cpus);
        for (int i = 0; i < nd->n_gpus; i++) {
            const mr_topo_gpu *g = &nd->gpus[i];
            fprintf(f, "gpu %d name %s bus %s numa %d nic %d cpus %s model %s\n", i, g->name, dash(g->busid), g->numa,
                    g->nic, dash(g->cpus), dash(g->model));
        }
        for (int i = 0; i < nd->n_nics; i++) {
            const mr_topo_nic *c = &nd->nics[i];
            fprintf(f, "nic %d name %s netdev %s bus %s fabric %d numa %d\n", i, c->name, dash(c->netdev),
                    dash(c->busid), c->fabric, c->numa);
        }
    }
    for (int r = 0; r < t->world; r++) {
        const mr_topo_rank *k = &t->ranks[r];
        fprintf(f, "rank %d node %d local %d of %d pid %d bound %s\n", r, k->node, k->local_rank, k->local_size, k->pid,
                k->bound);
    }
    return ferror(f) ? mr_error(MR_ERR_IO, "writing the topology failed") : MR_OK;
}

mr_status mr_topo_save(const mr_topo *t, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) return mr_error(MR_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    mr_status st = mr_topo_dump(t, f);
    if (fclose(f) != 0 && st == MR_OK) st = mr_error(MR_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return st == MR_OK ? MR_OK : mr_error_context(st, "%s", path);
}

static void undash(char *s) {
    if (!strcmp(s, "-")) s[0] = 0;
}

#define BAD(...)                                                                                   \
    do {                                                                                           \
        st = mr_error(MR_ERR_INPUT, __VA_ARGS__);                                                  \
        goto out;                                                                                  \
    } while (0)

mr_status mr_topo_parse(mr_topo *t, const char *text, const char *origin) {
    memset(t, 0, sizeof *t);
    mr_status st = MR_OK;
    char *copy = strdup(text);
    int line = 0, node = -1, have_header = 0, *seen_rank = NULL;
    if (!copy) return mr_error(MR_ERR_NOMEM, "out of memory");
    for (char *l = copy, *next; l; l = next) {
        next = strchr(l, '\n');
        if (next) *next++ = 0;
        line++;
        if (l[0] == '#' || l[strspn(l, " \t\r")] == 0) continue;
        int idx, n1, n2, n3, n4, used = 0;
        char a[MR_TOPO_SET], b[MR_TOPO_SET], c[MR_TOPO_SET], d[MR_TOPO_SET];
        if (!have_header) {
            if (strncmp(l, "moerun-topology 1", 17) != 0)
                BAD("%s:%d: not a moerun topology dump (expected 'moerun-topology 1')", origin, line);
            have_header = 1;
        } else if (!t->nodes) {
            if (sscanf(l, "nodes %d world %d", &n1, &n2) != 2 || n1 < 1 || n2 < 1 || n1 > (1 << 16) || n2 > (1 << 24))
                BAD("%s:%d: expected 'nodes N world W'", origin, line);
            t->n_nodes = n1;
            t->world = n2;
            t->nodes = calloc((size_t)n1, sizeof *t->nodes);
            t->ranks = calloc((size_t)n2, sizeof *t->ranks);
            seen_rank = calloc((size_t)n2 + (size_t)n1, sizeof *seen_rank);
            if (!t->nodes || !t->ranks || !seen_rank) BAD("%s: out of memory", origin);
        } else if (!strncmp(l, "node ", 5)) {
            if (sscanf(l, "node %d host %63s cores %d pus %d cpus %511s", &idx, a, &n1, &n2, b) != 5 || idx != node + 1 ||
                idx >= t->n_nodes)
                BAD("%s:%d: expected 'node %d host H cores C pus P cpus LIST'", origin, line, node + 1);
            node = idx;
            mr_topo_node *nd = &t->nodes[node];
            for (int i = 0; i < MR_TOPO_MAX_PUS; i++) nd->pu_core[i] = -1;
            mr_topo_copy(nd->host, sizeof nd->host, a);
            mr_topo_copy(nd->cpus, sizeof nd->cpus, b);
            nd->cores = n1;
            nd->pus = n2;
            seen_rank[t->world + node] = 1;
        } else if (node < 0) {
            BAD("%s:%d: '%.20s' before the first node line", origin, line, l);
        } else if (!strncmp(l, "core-pus", 8)) {
            mr_topo_node *nd = &t->nodes[node];
            char *s2 = NULL;
            int core = 0;
            for (char *tok = strtok_r(l + 8, " ", &s2); tok; tok = strtok_r(NULL, " ", &s2), core++) {
                hwloc_bitmap_t s = mr_topo_set_parse(tok);
                int ok = s && !hwloc_bitmap_iszero(s) && hwloc_bitmap_last(s) < MR_TOPO_MAX_PUS && core < MR_TOPO_MAX_PUS;
                for (int pu = ok ? hwloc_bitmap_first(s) : -1; pu >= 0; pu = hwloc_bitmap_next(s, pu))
                    nd->pu_core[pu] = (short)core;
                hwloc_bitmap_free(s);
                if (!ok) BAD("%s:%d: core %d: '%s' is not a CPU list below %d", origin, line, core, tok, MR_TOPO_MAX_PUS);
            }
        } else if (!strncmp(l, "numa ", 5)) {
            mr_topo_node *nd = &t->nodes[node];
            if (sscanf(l, "numa %d os %d cores %d cpus %511s", &idx, &n1, &n2, a) != 4 || idx != nd->n_numa ||
                idx >= MR_TOPO_MAX_NUMA)
                BAD("%s:%d: expected 'numa %d os N cores C cpus LIST'", origin, line, nd->n_numa);
            nd->numa[idx] = (mr_topo_numa){.os_index = n1, .cores = n2};
            mr_topo_copy(nd->numa[idx].cpus, MR_TOPO_SET, a);
            nd->n_numa++;
        } else if (!strncmp(l, "gpu ", 4)) {
            mr_topo_node *nd = &t->nodes[node];
            if (sscanf(l, "gpu %d name %63s bus %63s numa %d nic %d cpus %511s model %n", &idx, a, b, &n1, &n2, c,
                       &used) != 6 ||
                !used || idx != nd->n_gpus || idx >= MR_TOPO_MAX_GPUS)
                BAD("%s:%d: expected 'gpu %d name N bus B numa N nic N cpus LIST model M'", origin, line, nd->n_gpus);
            mr_topo_gpu *g = &nd->gpus[idx];
            mr_topo_copy(g->name, sizeof g->name, a);
            mr_topo_copy(g->busid, sizeof g->busid, b);
            mr_topo_copy(g->cpus, sizeof g->cpus, c);
            mr_topo_copy(g->model, sizeof g->model, l + used);
            undash(g->busid), undash(g->cpus), undash(g->model);
            g->numa = n1;
            g->nic = n2;
            nd->n_gpus++;
        } else if (!strncmp(l, "nic ", 4)) {
            mr_topo_node *nd = &t->nodes[node];
            if (sscanf(l, "nic %d name %63s netdev %63s bus %63s fabric %d numa %d", &idx, a, b, c, &n1, &n2) != 6 ||
                idx != nd->n_nics || idx >= MR_TOPO_MAX_NICS)
                BAD("%s:%d: expected 'nic %d name N netdev D bus B fabric 0|1 numa N'", origin, line, nd->n_nics);
            mr_topo_nic *n = &nd->nics[idx];
            mr_topo_copy(n->name, sizeof n->name, a);
            mr_topo_copy(n->netdev, sizeof n->netdev, b);
            mr_topo_copy(n->busid, sizeof n->busid, c);
            undash(n->netdev), undash(n->busid);
            n->fabric = n1 != 0;
            n->numa = n2;
            nd->n_nics++;
        } else if (!strncmp(l, "rank ", 5)) {
            if (sscanf(l, "rank %d node %d local %d of %d pid %d bound %511s", &idx, &n1, &n2, &n3, &n4, d) != 6 ||
                idx < 0 || idx >= t->world || n1 < 0 || n1 >= t->n_nodes || n2 < 0 || n3 < 1 || n2 >= n3)
                BAD("%s:%d: expected 'rank R node N local L of S pid P bound LIST' with R < %d, N < %d, L < S", origin,
                    line, t->world, t->n_nodes);
            if (seen_rank[idx]) BAD("%s:%d: rank %d appears twice", origin, line, idx);
            seen_rank[idx] = 1;
            t->ranks[idx] = (mr_topo_rank){.node = n1, .local_rank = n2, .local_size = n3, .pid = n4};
            mr_topo_copy(t->ranks[idx].bound, MR_TOPO_SET, d);
        } else {
            BAD("%s:%d: unknown line '%.40s'", origin, line, l);
        }
    }
    if (!have_header || !t->nodes) BAD("%s: not a moerun topology dump (too short)", origin);
    for (int n = 0; n < t->n_nodes; n++)
        if (!seen_rank[t->world + n]) BAD("%s: node %d is missing", origin, n);
    for (int r = 0; r < t->world; r++)
        if (!seen_rank[r]) BAD("%s: rank %d is missing", origin, r);
    for (int n = 0; n < t->n_nodes; n++) {
        const mr_topo_node *nd = &t->nodes[n];
        for (int i = 0; i < nd->n_gpus; i++)
            if (nd->gpus[i].numa >= nd->n_numa || nd->gpus[i].nic >= nd->n_nics)
                BAD("%s: node %d gpu %d names a NUMA node or NIC the node does not have", origin, n, i);
        for (int i = 0; i < nd->n_nics; i++)
            if (nd->nics[i].numa >= nd->n_numa) BAD("%s: node %d nic %d names a NUMA node it does not have", origin, n, i);
    }
out:
    free(copy);
    free(seen_rank);
    if (st != MR_OK) mr_topo_free(t);
    return st;
}

mr_status mr_topo_load(mr_topo *t, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return mr_error(MR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + len, 1, cap - len - 1, f)) > 0;) {
        len += got;
        if (len + 1 == cap) {
            char *nb = cap < ((size_t)1 << 30) ? realloc(buf, cap * 2) : NULL;
            if (!nb) free(buf);
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (!buf) return mr_error(MR_ERR_NOMEM, "%s: too large or out of memory", path);
    buf[len] = 0;
    mr_status st = mr_topo_parse(t, buf, path);
    free(buf);
    return st;
}
