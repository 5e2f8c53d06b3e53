/* Topology and placement over committed hwloc XML files (no MPI):
 *   dgx-h100.xml       ../shared/tools/gen_dgx_xml.py: 2 sockets x 56 cores x 2
 *                      threads, GPU cudaI paired with NIC mlx5_I on one PCIe
 *                      switch port, GPUs 0-3 on socket 0, 4-7 on socket 1
 *   cpu-2socket.xml    lstopo --input "pack:2 numa:1 core:4 pu:2"
 * Expected values come from how those files were made, not from moerun. */
#define _GNU_SOURCE
#include <hwloc.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "topology/topology.h"

static hwloc_bitmap_t set(const char *list) {
    hwloc_bitmap_t s = hwloc_bitmap_alloc();
    if (hwloc_bitmap_list_sscanf(s, list) != 0) hwloc_bitmap_zero(s);
    return s;
}

static int included(const char *a, const char *b) {
    hwloc_bitmap_t x = set(a), y = set(b);
    int r = !hwloc_bitmap_iszero(x) && hwloc_bitmap_isincluded(x, y);
    hwloc_bitmap_free(x);
    hwloc_bitmap_free(y);
    return r;
}

static int disjoint(const char *a, const char *b) {
    hwloc_bitmap_t x = set(a), y = set(b);
    int r = !hwloc_bitmap_intersects(x, y);
    hwloc_bitmap_free(x);
    hwloc_bitmap_free(y);
    return r;
}

static int weight(const char *a) {
    hwloc_bitmap_t x = set(a);
    int w = hwloc_bitmap_weight(x);
    hwloc_bitmap_free(x);
    return w;
}

static void plan_of(mr_plan *p, int data, int pipeline, int tensor) {
    mr_plan_init(p);
    p->parallel.data = data;
    p->parallel.pipeline = pipeline;
    p->parallel.tensor = tensor;
}

static const char *const socket_cpus[2] = {"0-55,112-167", "56-111,168-223"};

static void test_dgx_one_node(void) {
    const char *xml[] = {mr_test_src("tests/topology/dgx-h100.xml")};
    mr_topo t;
    mr_status st = mr_topo_from_xml(&t, xml, 1, 1, 8, 0);
    CHECK(st == MR_OK, "from_xml: %s", mr_last_error());
    if (st != MR_OK) return;
    const mr_topo_node *n = &t.nodes[0];
    CHECK(n->cores == 112 && n->pus == 224, "cores %d pus %d", n->cores, n->pus);
    CHECK(n->n_numa == 2 && n->n_gpus == 8 && n->n_nics == 8, "numa %d gpus %d nics %d", n->n_numa, n->n_gpus, n->n_nics);
    for (int g = 0; g < n->n_gpus; g++) {
        char want[16];
        snprintf(want, sizeof want, "cuda%d", g);
        CHECK(!strcmp(n->gpus[g].name, want), "gpu %d is %s", g, n->gpus[g].name);
        CHECK(n->gpus[g].numa == g / 4, "gpu %d numa %d", g, n->gpus[g].numa);
        CHECK(!strcmp(n->gpus[g].cpus, socket_cpus[g / 4]), "gpu %d cpus %s", g, n->gpus[g].cpus);
        snprintf(want, sizeof want, "mlx5_%d", g);
        CHECK(n->gpus[g].nic >= 0 && !strcmp(n->nics[n->gpus[g].nic].name, want), "gpu %d paired with %s", g,
              n->gpus[g].nic >= 0 ? n->nics[n->gpus[g].nic].name : "nothing");
        CHECK(!strcmp(n->gpus[g].model, "NVIDIA H100 80GB HBM3"), "gpu %d model %s", g, n->gpus[g].model);
    }
    CHECK(!strcmp(n->gpus[0].busid, "0000:1b:00.0"), "bus id %s", n->gpus[0].busid);
    for (int i = 0; i < n->n_nics; i++) {
        CHECK(n->nics[i].fabric == 1, "nic %d fabric", i);
        CHECK(!strncmp(n->nics[i].netdev, "ibp", 3), "nic %d netdev %s", i, n->nics[i].netdev);
    }

    mr_plan p;
    plan_of(&p, 1, 1, 8);
    mr_topo_placement pl;
    st = mr_topo_place(&t, &p, &pl);
    CHECK(st == MR_OK, "place: %s", mr_last_error());
    if (st == MR_OK) {
        CHECK(!pl.reordered && !pl.warning[0] && !pl.gpus_shared, "reordered %d warning '%s'", pl.reordered, pl.warning);
        for (int r = 0; r < 8; r++) {
            const mr_topo_slot *s = &pl.slots[r];
            CHECK(s->gpu == r, "rank %d gpu %d", r, s->gpu);
            CHECK(s->nic == r, "rank %d nic %d", r, s->nic);
            CHECK(s->numa == r / 4, "rank %d numa %d", r, s->numa);
            CHECK(included(s->cpus, socket_cpus[r / 4]), "rank %d cpus %s outside its GPU's socket", r, s->cpus);
            CHECK(s->cores == 14 && weight(s->cpus) == 28 && s->shared == 1, "rank %d: %d cores, cpus %s", r, s->cores,
                  s->cpus);
            for (int q = 0; q < r; q++)
                CHECK(disjoint(s->cpus, pl.slots[q].cpus), "ranks %d and %d share cpus", r, q);
        }
        CHECK(pl.span[MR_GROUP_TENSOR].split == 0 && pl.span[MR_GROUP_TENSOR].max_nodes == 1, "tensor span");
        mr_topo_placement_free(&pl);
    }

    /* sixteen ranks on eight GPUs: two per GPU, warned */
    mr_topo_free(&t);
    st = mr_topo_from_xml(&t, xml, 1, 1, 16, 0);
    plan_of(&p, 2, 1, 8);
    st = st == MR_OK ? mr_topo_place(&t, &p, &pl) : st;
    CHECK(st == MR_OK, "16 ranks: %s", mr_last_error());
    if (st == MR_OK) {
        CHECK(pl.gpus_shared && mr_test_contains(pl.warning, "GPUs are shared"), "warning '%s'", pl.warning);
        CHECK(pl.slots[3].gpu == 3 && pl.slots[11].gpu == 3, "local order wraps: %d %d", pl.slots[3].gpu, pl.slots[11].gpu);
        /* socket 0 has ranks 0-3 and 8-11: 8 ranks x 7 cores */
        CHECK(pl.slots[11].cores == 7 && included(pl.slots[11].cpus, socket_cpus[0]), "rank 11: %d cores %s",
              pl.slots[11].cores, pl.slots[11].cpus);
        mr_topo_placement_free(&pl);
    }
    mr_topo_free(&t);
}

/* Without mlx5_0 the nearest NIC of cuda0 is mlx5_1 behind the same
 * switch, and cuda1 keeps its own mlx5_1: pairing is by PCI distance, not
 * by order. */
static void test_nic_distance(void) {
    FILE *f = fopen(mr_test_src("tests/topology/dgx-h100.xml"), "rb");
    char *x = calloc(1 << 20, 1);
    size_t len = f && x ? fread(x, 1, (1 << 20) - 1, f) : 0;
    if (f) fclose(f);
    char *nic0 = len ? strstr(x, "pci_busid=\"0000:18:00.0\"") : NULL;
    CHECK(nic0 != NULL, "NIC 0 in the XML");
    if (!nic0) {
        free(x);
        return;
    }
    char *start = nic0;
    while (start > x && start[-1] != '\n') start--;
    char *end = start;
    for (int lines = 0; lines < 4 && end; lines++) end = strchr(end, '\n') + 1; /* PCIDev, 2 OSDev, </object> */
    memmove(start, end, strlen(end) + 1);
    char path[4096];
    snprintf(path, sizeof path, "%s/no-mlx5_0.xml", mr_test_tmpdir());
    f = fopen(path, "wb");
    if (f) {
        fputs(x, f);
        fclose(f);
    }
    free(x);
    mr_topo_node n;
    mr_status st = mr_topo_discover(path, &n, NULL);
    CHECK(st == MR_OK, "%s", mr_last_error());
    remove(path);
    if (st != MR_OK) return;
    CHECK(n.n_nics == 7 && n.n_gpus == 8, "%d NICs", n.n_nics);
    static const char *const want[8] = {"mlx5_1", "mlx5_1", "mlx5_2", "mlx5_3", "mlx5_4", "mlx5_5", "mlx5_6", "mlx5_7"};
    for (int g = 0; g < 8; g++)
        CHECK(n.gpus[g].nic >= 0 && !strcmp(n.nics[n.gpus[g].nic].name, want[g]), "cuda%d paired with %s, want %s", g,
              n.gpus[g].nic >= 0 ? n.nics[n.gpus[g].nic].name : "nothing", want[g]);
}

static void test_dgx_two_nodes(void) {
    const char *xml[] = {mr_test_src("tests/topology/dgx-h100.xml")};
    mr_topo t;
    mr_plan p;
    mr_topo_placement pl;
    /* tp8 x pp2 on 2 nodes x 8, with ranks dealt round robin (mpirun
     * --map-by node): renumbered so that each tensor group is one node */
    for (int cyclic = 0; cyclic < 2; cyclic++) {
        mr_status st = mr_topo_from_xml(&t, xml, 1, 2, 8, cyclic);
        CHECK(st == MR_OK, "from_xml: %s", mr_last_error());
        if (st != MR_OK) return;
        plan_of(&p, 1, 2, 8);
        st = mr_topo_place(&t, &p, &pl);
        CHECK(st == MR_OK, "place: %s", mr_last_error());
        if (st == MR_OK) {
            CHECK(pl.reordered == cyclic, "reordered %d (cyclic %d)", pl.reordered, cyclic);
            CHECK(pl.span[MR_GROUP_TENSOR].groups == 2 && pl.span[MR_GROUP_TENSOR].split == 0, "tensor groups %d split %d",
                  pl.span[MR_GROUP_TENSOR].groups, pl.span[MR_GROUP_TENSOR].split);
            CHECK(pl.span[MR_GROUP_PIPELINE].split == 8 && pl.span[MR_GROUP_PIPELINE].max_nodes == 2, "pipeline split %d",
                  pl.span[MR_GROUP_PIPELINE].split);
            CHECK(!pl.warning[0], "warning '%s'", pl.warning);
            for (int r = 0; r < 16; r++) {
                int w = pl.slots[r].world_rank;
                CHECK(pl.plan_rank[w] == r, "inverse");
                CHECK(t.ranks[w].node == r / 8, "plan rank %d on node %d", r, t.ranks[w].node);
                CHECK(pl.slots[r].gpu == r % 8, "plan rank %d gpu %d", r, pl.slots[r].gpu);
                CHECK(w == (cyclic ? (r % 8) * 2 + r / 8 : r), "plan rank %d is mpi rank %d", r, w);
            }
            mr_topo_placement_free(&pl);
        }
        mr_topo_free(&t);
    }
    /* tp16 over 2 nodes: a warning; refused under strict */
    mr_status st = mr_topo_from_xml(&t, xml, 1, 2, 8, 0);
    if (st != MR_OK) return;
    plan_of(&p, 1, 1, 16);
    st = mr_topo_place(&t, &p, &pl);
    CHECK(st == MR_OK, "tp16 not strict: %s", mr_last_error());
    if (st == MR_OK) {
        CHECK(pl.span[MR_GROUP_TENSOR].split == 1 && pl.span[MR_GROUP_TENSOR].max_nodes == 2, "tp16 span");
        CHECK(mr_test_contains(pl.warning, "tensor groups span nodes") && mr_test_contains(pl.warning, "node0, node1"),
              "warning '%s'", pl.warning);
        mr_topo_placement_free(&pl);
    }
    static const char strict_yaml[] = "parallel:\n  tensor: 16\ntopology:\n  strict: true\n";
    CHECK(mr_plan_parse(&p, strict_yaml, sizeof strict_yaml - 1, "strict.yaml") == MR_OK, "%s", mr_last_error());
    st = mr_topo_place(&t, &p, &pl);
    CHECK(st == MR_ERR_INPUT, "strict: status %d", st);
    CHECK(mr_test_contains(mr_last_error(), "strict.yaml:4:11: topology.strict") &&
              mr_test_contains(mr_last_error(), "strict.yaml:2:11"),
          "message: %s", mr_last_error());
    CHECK(pl.slots == NULL, "nothing left allocated");
    /* a world the plan does not have */
    plan_of(&p, 1, 1, 8);
    st = mr_topo_place(&t, &p, &pl);
    CHECK(st == MR_ERR_INPUT && mr_test_contains(mr_last_error(), "8 ranks"), "wrong world: %s", mr_last_error());
    mr_topo_free(&t);
}

static void test_gpu_numa_policy(void) {
    const char *xml[] = {mr_test_src("tests/topology/dgx-h100.xml")};
    mr_topo t;
    if (mr_topo_from_xml(&t, xml, 1, 1, 4, 0) != MR_OK) {
        CHECK(0, "from_xml: %s", mr_last_error());
        return;
    }
    /* ranks bound by mpirun to socket 1, 0, 1, 0 */
    for (int r = 0; r < 4; r++) snprintf(t.ranks[r].bound, MR_TOPO_SET, "%s", socket_cpus[(r + 1) % 2]);
    mr_plan p;
    plan_of(&p, 4, 1, 1);
    p.topology.gpu = MR_TOPO_GPU_NUMA;
    mr_topo_placement pl;
    mr_status st = mr_topo_place(&t, &p, &pl);
    CHECK(st == MR_OK, "%s", mr_last_error());
    if (st == MR_OK) {
        static const int want[4] = {4, 0, 5, 1};
        for (int r = 0; r < 4; r++) {
            CHECK(pl.slots[r].gpu == want[r], "rank %d gpu %d, want %d", r, pl.slots[r].gpu, want[r]);
            CHECK(included(pl.slots[r].cpus, socket_cpus[(r + 1) % 2]), "rank %d cpus %s", r, pl.slots[r].cpus);
        }
        mr_topo_placement_free(&pl);
    }
    p.topology.gpu = MR_TOPO_GPU_LOCAL_RANK;
    st = mr_topo_place(&t, &p, &pl);
    if (st == MR_OK) {
        for (int r = 0; r < 4; r++) CHECK(pl.slots[r].gpu == r, "local order: rank %d gpu %d", r, pl.slots[r].gpu);
        mr_topo_placement_free(&pl);
    }
    mr_topo_free(&t);
}

static void test_cpu_only(void) {
    const char *xml[] = {mr_test_src("tests/topology/cpu-2socket.xml")};
    mr_topo t;
    mr_plan p;
    mr_topo_placement pl;
    static const struct {
        int ranks;
        const char *cpus[6];
        int numa[6], shared;
    } cases[] = {
        /* 8 cores x 2 PUs (PUs 2c, 2c+1 are core c), socket 0 = cores 0-3 */
        {4, {"0-3", "4-7", "8-11", "12-15"}, {0, 0, 1, 1}, 1},
        {6, {"0-1", "2-3", "4-7", "8-9", "10-11", "12-15"}, {0, 0, 0, 1, 1, 1}, 1},
        {1, {"0-15"}, {-1}, 1},
        /* 10 ranks on 8 cores: each socket's 5 ranks share its cores */
        {10, {"0-7", "0-7", "0-7", "0-7", "0-7", "8-15"}, {0, 0, 0, 0, 0, 1}, 5},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        mr_status st = mr_topo_from_xml(&t, xml, 1, 1, cases[c].ranks, 0);
        CHECK(st == MR_OK, "from_xml: %s", mr_last_error());
        if (st != MR_OK) return;
        CHECK(t.nodes[0].n_gpus == 0 && t.nodes[0].n_numa == 2 && t.nodes[0].cores == 8, "cpu node");
        plan_of(&p, cases[c].ranks, 1, 1);
        st = mr_topo_place(&t, &p, &pl);
        CHECK(st == MR_OK, "%s", mr_last_error());
        for (int r = 0; st == MR_OK && r < cases[c].ranks && r < 6; r++) {
            CHECK(!strcmp(pl.slots[r].cpus, cases[c].cpus[r]), "%d ranks: rank %d cpus %s, want %s", cases[c].ranks, r,
                  pl.slots[r].cpus, cases[c].cpus[r]);
            CHECK(pl.slots[r].numa == cases[c].numa[r], "%d ranks: rank %d numa %d", cases[c].ranks, r, pl.slots[r].numa);
            CHECK(pl.slots[r].shared == cases[c].shared, "%d ranks: rank %d shared %d", cases[c].ranks, r,
                  pl.slots[r].shared);
            CHECK(pl.slots[r].gpu == -1 && pl.slots[r].nic == -1, "no GPU, no NIC");
        }
        if (st == MR_OK) mr_topo_placement_free(&pl);
        mr_topo_free(&t);
    }
}

/* dump -> parse gives the same topology and the same placement */
static void test_dump_roundtrip(void) {
    const char *xml[] = {mr_test_src("tests/topology/dgx-h100.xml"), mr_test_src("tests/topology/cpu-2socket.xml")};
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s", xml[0]);
    snprintf(b, sizeof b, "%s", xml[1]);
    const char *both[] = {a, b};
    mr_topo t, u;
    mr_status st = mr_topo_from_xml(&t, both, 2, 2, 4, 1);
    CHECK(st == MR_OK, "%s", mr_last_error());
    if (st != MR_OK) return;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CHECK(mr_topo_dump(&t, f) == MR_OK, "dump");
    fclose(f);
    st = mr_topo_parse(&u, text, "mem.dump");
    CHECK(st == MR_OK, "parse: %s", mr_last_error());
    if (st == MR_OK) {
        CHECK(u.n_nodes == 2 && u.world == 8, "sizes");
        for (int n = 0; n < 2; n++)
            CHECK(!memcmp(&t.nodes[n], &u.nodes[n], sizeof t.nodes[n]), "node %d differs after reload", n);
        for (int r = 0; r < 8; r++)
            CHECK(!memcmp(&t.ranks[r], &u.ranks[r], sizeof t.ranks[r]), "rank %d differs after reload", r);
        mr_plan p;
        plan_of(&p, 2, 1, 4);
        mr_topo_placement p1, p2;
        if (mr_topo_place(&t, &p, &p1) == MR_OK && mr_topo_place(&u, &p, &p2) == MR_OK) {
            CHECK(!memcmp(p1.slots, p2.slots, sizeof *p1.slots * 8), "placements differ");
            CHECK(p1.reordered && p1.span[MR_GROUP_TENSOR].split == 0, "cyclic 2x4 with tp4 renumbered");
            mr_topo_placement_free(&p1);
            mr_topo_placement_free(&p2);
        }
        mr_topo_free(&u);
    }
    /* damaged dumps name the place */
    static const struct {
        const char *find, *replace, *msg;
    } bad[] = {
        {"moerun-topology 1", "moerun-topology 9", "mem.dump:1: not a moerun topology dump"},
        {"rank 3 node", "rank 2 node", "rank 2 appears twice"},
        {"numa 1 os 1", "numa 5 os 1", "expected 'numa 1"},
        {"\ncore-pus ", "\ncore-pus x-y ", "core 0: 'x-y'"},
        {"gpu 0 name cuda0", "gpu 0 name", "expected 'gpu 0"},
        {"\nnode 1 ", "\nnode 7 ", "expected 'node 1"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *hit = strstr(text, bad[i].find);
        CHECK(hit != NULL, "'%s' in the dump", bad[i].find);
        if (!hit) continue;
        size_t pre = (size_t)(hit - text), fl = strlen(bad[i].find), rl = strlen(bad[i].replace);
        char *d = malloc(len + rl + 1);
        memcpy(d, text, pre);
        memcpy(d + pre, bad[i].replace, rl);
        strcpy(d + pre + rl, hit + fl);
        st = mr_topo_parse(&u, d, "mem.dump");
        CHECK(st == MR_ERR_INPUT && mr_test_contains(mr_last_error(), bad[i].msg), "case %zu: %s", i, mr_last_error());
        CHECK(st != MR_OK || (mr_topo_free(&u), 0), "damaged dump accepted");
        free(d);
    }
    /* the truncated file: a rank missing */
    char *cut = strstr(text, "rank 7 ");
    if (cut) {
        *cut = 0;
        st = mr_topo_parse(&u, text, "mem.dump");
        CHECK(st == MR_ERR_INPUT && mr_test_contains(mr_last_error(), "rank 7 is missing"), "%s", mr_last_error());
    }
    free(text);
    mr_topo_free(&t);
    /* not an XML */
    const char *notxml[] = {mr_test_src("tests/topology/README.md")};
    st = mr_topo_from_xml(&t, notxml, 1, 1, 1, 0);
    CHECK(st == MR_ERR_INPUT && mr_test_contains(mr_last_error(), "README.md"), "bad xml: %s", mr_last_error());
}

static void test_this_machine(void) {
    mr_topo_node n;
    char bound[MR_TOPO_SET];
    mr_status st = mr_topo_discover(NULL, &n, bound);
    CHECK(st == MR_OK, "%s", mr_last_error());
    CHECK(n.cores >= 1 && n.pus >= n.cores && n.n_numa >= 1 && n.host[0], "this machine: %d cores", n.cores);
    CHECK(included(bound, n.cpus), "binding %s within %s", bound, n.cpus);
}

int main(void) {
    test_dgx_one_node();
    test_nic_distance();
    test_dgx_two_nodes();
    test_gpu_numa_policy();
    test_cpu_only();
    test_dump_roundtrip();
    test_this_machine();
    return mr_test_summary();
}
