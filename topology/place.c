/* Placement: plan ranks onto nodes, then each rank's GPU, cores, NUMA node
 * and NIC.  A pure function of (mr_topo, plan).  See topology.h.
 *
 * On one node, with L local ranks in local-rank order:
 *
 *   GPU        local rank i -> GPU i mod G (topology.gpu: local_rank), or a
 *              GPU of the NUMA node the rank was bound to from outside,
 *              least used first (numa)
 *   domain     the cores a rank may take: its GPU's local cores (socket /
 *              NUMA node) with GPUs; without, NUMA node i takes local
 *              ranks [i*L/N, (i+1)*L/N) (the whole node if L < N)
 *   cores      the K ranks of one domain split its C cores (in core order,
 *              so NUMA nodes stay whole) into K runs of C/K; with K > C
 *              (oversubscribed) each rank gets the whole domain and the
 *              scheduler shares it (pinning two ranks to one core while
 *              another core idles slows every collective to the pair)
 *   memory     the NUMA node of those cores (none when they span several)
 *   NIC        its GPU's nearest NIC; without GPUs one of the NICs of its
 *              NUMA node (OpenFabrics first), round robin
 */
#include <stdlib.h>
#include <string.h>

#include "topology/topology-internal.h"

typedef struct order_key {
    int node, local, world;
} order_key;

static int cmp_order(const void *a, const void *b) {
    const order_key *x = a, *y = b;
    if (x->node != y->node) return x->node < y->node ? -1 : 1;
    if (x->local != y->local) return x->local < y->local ? -1 : 1;
    return x->world < y->world ? -1 : x->world > y->world;
}

/* NUMA index holding every PU of `set`, -1 if none or several. */
static int numa_of_set(const mr_topo_node *node, hwloc_const_bitmap_t set) {
    int found = -1;
    for (int i = 0; i < node->n_numa; i++) {
        hwloc_bitmap_t n = mr_topo_set_parse(node->numa[i].cpus);
        if (!n) continue;
        int inter = hwloc_bitmap_intersects(n, set), inside = hwloc_bitmap_isincluded(set, n);
        hwloc_bitmap_free(n);
        if (inter) {
            if (!inside || found >= 0) return -1;
            found = i;
        }
    }
    return found;
}

static int pick_gpu(const mr_topo *t, const mr_topo_node *node, int world_rank, int local, mr_topo_gpu_policy pol,
                    const int *load) {
    if (pol == MR_TOPO_GPU_NUMA) {
        hwloc_bitmap_t b = mr_topo_set_parse(t->ranks[world_rank].bound);
        hwloc_bitmap_t all = mr_topo_set_parse(node->cpus);
        int m = b && all && !hwloc_bitmap_isequal(b, all) ? numa_of_set(node, b) : -1;
        hwloc_bitmap_free(b);
        hwloc_bitmap_free(all);
        int best = -1;
        for (int g = 0; m >= 0 && g < node->n_gpus; g++)
            if (node->gpus[g].numa == m && (best < 0 || load[g] < load[best])) best = g;
        if (best >= 0) return best;
        for (int g = 0; g < node->n_gpus; g++)
            if (best < 0 || load[g] < load[best]) best = g;
        return best;
    }
    return local % node->n_gpus;
}

/* The domain's cores split among its ranks (plan ranks in slot_idx[]). */
static void split_domain(const mr_topo_node *node, const char *domain, const int *slot_idx, int k_ranks,
                         mr_topo_placement *pl) {
    hwloc_bitmap_t d = mr_topo_set_parse(domain);
    hwloc_bitmap_t all = mr_topo_set_parse(node->cpus);
    if (d && all) hwloc_bitmap_and(d, d, all);
    if (!d || hwloc_bitmap_iszero(d)) { /* unknown locality: the whole node */
        hwloc_bitmap_free(d);
        d = all ? hwloc_bitmap_dup(all) : NULL;
    }
    int n_cores = 0;
    short *cores = malloc(sizeof(short) * MR_TOPO_MAX_PUS);
    char *seen = calloc(MR_TOPO_MAX_PUS, 1);
    for (int pu = 0; d && cores && seen && pu < MR_TOPO_MAX_PUS; pu++) {
        int c = node->pu_core[pu];
        if (c >= 0 && hwloc_bitmap_isset(d, (unsigned)pu) && !seen[c]) seen[c] = 1;
    }
    for (int c = 0; cores && seen && c < MR_TOPO_MAX_PUS; c++)
        if (seen[c]) cores[n_cores++] = (short)c;
    hwloc_bitmap_t s = hwloc_bitmap_alloc();
    for (int k = 0; k < k_ranks; k++) {
        mr_topo_slot *sl = &pl->slots[slot_idx[k]];
        int lo = 0, hi = n_cores, shared = k_ranks; /* more ranks than cores: all share the domain */
        if (n_cores >= k_ranks) {
            lo = (int)((long)k * n_cores / k_ranks);
            hi = (int)((long)(k + 1) * n_cores / k_ranks);
            shared = 1;
        }
        hwloc_bitmap_zero(s);
        for (int pu = 0; pu < MR_TOPO_MAX_PUS; pu++) {
            int c = node->pu_core[pu];
            if (c < 0) continue;
            for (int i = lo; i < hi; i++)
                if (cores[i] == c) hwloc_bitmap_set(s, (unsigned)pu);
        }
        if (hi == lo && all) hwloc_bitmap_copy(s, all);
        mr_topo_set_string(s, sl->cpus);
        sl->cores = hi > lo ? hi - lo : node->cores;
        sl->shared = shared;
        sl->numa = numa_of_set(node, s);
    }
    hwloc_bitmap_free(s);
    hwloc_bitmap_free(d);
    hwloc_bitmap_free(all);
    free(cores);
    free(seen);
}

static void place_node(const mr_topo *t, int n, const int *loc, int n_loc, const mr_plan *plan,
                       mr_topo_placement *pl) {
    const mr_topo_node *node = &t->nodes[n];
    int load[MR_TOPO_MAX_GPUS] = {0};
    int *slot_idx = malloc(sizeof(int) * (size_t)(n_loc ? n_loc : 1));
    char *done = calloc((size_t)(n_loc ? n_loc : 1), 1);
    if (!slot_idx || !done) goto out;
    for (int l = 0; l < n_loc; l++) {
        mr_topo_slot *sl = &pl->slots[pl->plan_rank[loc[l]]];
        sl->gpu = node->n_gpus ? pick_gpu(t, node, loc[l], l, plan->topology.gpu, load) : -1;
        if (sl->gpu >= 0 && ++load[sl->gpu] > 1) pl->gpus_shared = 1;
    }
    /* domains in order of their first rank: one per GPU NUMA node (or GPU
     * with unknown NUMA node); without GPUs the NUMA nodes, in blocks of
     * ranks (the whole node when there are fewer ranks than NUMA nodes) */
    int blocks = !node->n_gpus && n_loc >= node->n_numa ? node->n_numa : 1;
    for (int l = 0; l < n_loc; l++) {
        if (done[l]) continue;
        const mr_topo_slot *first = &pl->slots[pl->plan_rank[loc[l]]];
        int block = (int)((long)l * blocks / n_loc);
        const char *domain = first->gpu >= 0 ? node->gpus[first->gpu].cpus
                             : blocks > 1    ? node->numa[block].cpus
                                             : node->cpus;
        int k = 0;
        for (int m = l; m < n_loc; m++) {
            const mr_topo_slot *sl = &pl->slots[pl->plan_rank[loc[m]]];
            int same = first->gpu < 0 ? (int)((long)m * blocks / n_loc) == block
                       : node->gpus[first->gpu].numa >= 0
                           ? node->gpus[sl->gpu].numa == node->gpus[first->gpu].numa
                           : sl->gpu == first->gpu;
            if (!done[m] && same) slot_idx[k++] = pl->plan_rank[loc[m]], done[m] = 1;
        }
        split_domain(node, domain, slot_idx, k, pl);
    }
    /* NICs */
    int fabric = 0, used[MR_TOPO_MAX_NUMA + 1] = {0};
    for (int i = 0; i < node->n_nics; i++) fabric |= node->nics[i].fabric;
    for (int l = 0; l < n_loc; l++) {
        mr_topo_slot *sl = &pl->slots[pl->plan_rank[loc[l]]];
        if (sl->gpu >= 0) {
            sl->nic = node->gpus[sl->gpu].nic;
            continue;
        }
        int cand[MR_TOPO_MAX_NICS], nc = 0;
        for (int pass = 0; pass < 2 && nc == 0; pass++)
            for (int i = 0; i < node->n_nics; i++)
                if (node->nics[i].fabric == fabric && (pass == 1 || node->nics[i].numa == sl->numa))
                    cand[nc++] = i;
        int u = sl->numa >= 0 ? sl->numa : MR_TOPO_MAX_NUMA;
        sl->nic = nc ? cand[used[u]++ % nc] : -1;
    }
out:
    free(slot_idx);
    free(done);
}

static void describe_group(const mr_topo *t, const mr_topo_placement *pl, const int *members, int n, char *buf,
                           size_t len) {
    int lo = members[0], hi = members[n - 1];
    size_t o = (size_t)snprintf(buf, len, "plan ranks %d-%d on", lo, hi);
    int shown = 0;
    for (int i = 0; i < n && o < len; i++) {
        int node = t->ranks[pl->slots[members[i]].world_rank].node, dup = 0;
        for (int j = 0; j < i; j++) dup |= t->ranks[pl->slots[members[j]].world_rank].node == node;
        if (dup) continue;
        if (shown++ == 4) {
            o += (size_t)snprintf(buf + o, len - o, " ...");
            break;
        }
        o += (size_t)snprintf(buf + o, len - o, "%s %s", shown > 1 ? "," : "", t->nodes[node].host);
    }
}

mr_status mr_topo_place(const mr_topo *t, const mr_plan *plan, mr_topo_placement *pl) {
    memset(pl, 0, sizeof *pl);
    int w = t->world;
    if (mr_plan_world(plan) != w)
        return mr_error(MR_ERR_INPUT, "the plan has %d ranks (data x pipeline x tensor) but the job has %d",
                        mr_plan_world(plan), w);
    pl->world = w;
    pl->slots = calloc((size_t)w, sizeof *pl->slots);
    pl->plan_rank = calloc((size_t)w, sizeof *pl->plan_rank);
    order_key *ord = calloc((size_t)w, sizeof *ord);
    int *members = calloc((size_t)w, sizeof *members);
    int *loc = calloc((size_t)w, sizeof *loc);
    int *nodes_seen = calloc((size_t)t->n_nodes, sizeof *nodes_seen);
    mr_status st = MR_OK;
    if (!pl->slots || !pl->plan_rank || !ord || !members || !loc || !nodes_seen) {
        st = mr_error(MR_ERR_NOMEM, "out of memory placing %d ranks", w);
        goto out;
    }
    for (int r = 0; r < w; r++) ord[r] = (order_key){t->ranks[r].node, t->ranks[r].local_rank, r};
    qsort(ord, (size_t)w, sizeof *ord, cmp_order);
    for (int r = 0; r < w; r++) {
        pl->slots[r].world_rank = ord[r].world;
        pl->slots[r].gpu = pl->slots[r].nic = pl->slots[r].numa = -1;
        pl->plan_rank[ord[r].world] = r;
        if (ord[r].world != r) pl->reordered = 1;
    }
    for (int n = 0, r = 0; n < t->n_nodes; n++) {
        int k = 0;
        while (r < w && ord[r].node == n) loc[k++] = ord[r++].world;
        place_node(t, n, loc, k, plan, pl);
    }
    /* groups: how many nodes each spans */
    char first_split[256] = "";
    for (int g = 0; g < MR_GROUP_KIND_COUNT; g++) {
        mr_topo_span *sp = &pl->span[g];
        for (int r = 0; r < w; r++) {
            int n = mr_plan_group(plan, (mr_group_kind)g, r, members);
            if (members[0] != r) continue; /* each group once, from its first rank */
            memset(nodes_seen, 0, sizeof(int) * (size_t)t->n_nodes);
            int span = 0;
            for (int i = 0; i < n; i++) {
                int node = t->ranks[pl->slots[members[i]].world_rank].node;
                span += !nodes_seen[node];
                nodes_seen[node] = 1;
            }
            sp->groups++;
            if (span > sp->max_nodes) sp->max_nodes = span;
            if (span > 1) {
                sp->split++;
                if (g == MR_GROUP_TENSOR && !first_split[0])
                    describe_group(t, pl, members, n, first_split, sizeof first_split);
            }
        }
    }
    if (pl->span[MR_GROUP_TENSOR].split) {
        int most = 0;
        for (int n = 0; n < t->n_nodes; n++) {
            int c = 0;
            for (int r = 0; r < w; r++) c += t->ranks[r].node == n;
            if (c > most) most = c;
        }
        char where_t[MR_PLAN_PATH_MAX + 32], where_s[MR_PLAN_PATH_MAX + 32];
        snprintf(pl->warning, sizeof pl->warning,
                 "%d of %d tensor groups span nodes (%s): each all-reduce would cross the network; "
                 "parallel.tensor = %d (%s), at most %d ranks on a node",
                 pl->span[MR_GROUP_TENSOR].split, pl->span[MR_GROUP_TENSOR].groups, first_split,
                 plan->parallel.tensor, mr_plan_where(plan, MR_PLAN_KEY_TENSOR, where_t, sizeof where_t), most);
        if (plan->topology.strict) {
            st = mr_error(MR_ERR_INPUT, "%s: topology.strict is set and %s",
                          mr_plan_where(plan, MR_PLAN_KEY_TOPO_STRICT, where_s, sizeof where_s), pl->warning);
            goto out;
        }
    } else if (pl->gpus_shared) {
        snprintf(pl->warning, sizeof pl->warning, "more ranks than GPUs on a node: GPUs are shared");
    }
out:
    free(ord);
    free(members);
    free(loc);
    free(nodes_seen);
    if (st != MR_OK) mr_topo_placement_free(pl);
    return st;
}

void mr_topo_placement_free(mr_topo_placement *pl) {
    free(pl->slots);
    free(pl->plan_rank);
    pl->slots = NULL;
    pl->plan_rank = NULL;
}
