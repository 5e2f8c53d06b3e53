/* moerun topo: what each rank sees and where it sits.
 *
 * Under mpirun every rank discovers its node with hwloc, the ranks
 * exchange, and rank 0 prints the global topology and the placement of the
 * plan's ranks.  Without MPI the topology comes from files: an hwloc XML
 * per node (--xml, --nodes, --ranks-per-node) or a dump (--load). */
#define _GNU_SOURCE
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/commands.h"
#include "runtime/comm.h"
#include "runtime/plan.h"
#include "topology/topology.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: mpirun -np N moerun topo [--plan PLAN.yaml] [--json] [--dump FILE] [--bind]\n"
            "       moerun topo --xml NODE.xml[,NODE2.xml...] --nodes N --ranks-per-node R [--map block|cyclic] ...\n"
            "       moerun topo --load DUMP ...\n"
            "\n"
            "Shows every node (cores, NUMA nodes, GPUs with their bus id, NUMA node, local cores and\n"
            "nearest NIC, NICs) and every rank: host, GPU, NUMA node, the cores it is given, NIC, and\n"
            "its data / pipeline / tensor / expert coordinates; then how many groups of each kind span\n"
            "nodes.  Ranks are renumbered so that each node holds neighbouring plan ranks; a tensor\n"
            "group spanning nodes is a warning, or an error under `topology.strict: true`.\n"
            "\n"
            "  --plan PLAN.yaml       the plan to place (default: every rank a data-parallel replica)\n"
            "  --set KEY=VALUE        override one plan key, e.g. --set parallel.tensor=8\n"
            "  --json                 JSON instead of the table\n"
            "  --dump FILE            also write the global topology to FILE (reload it with --load)\n"
            "  --load FILE            the topology of a dump instead of this job (no MPI)\n"
            "  --xml LIST             hwloc XML files, one for all nodes or one per node (no MPI with\n"
            "                         --nodes/--ranks-per-node; under mpirun each rank reads it instead\n"
            "                         of this machine, as HWLOC_XMLFILE does)\n"
            "  --nodes N              nodes of a topology from --xml (default 1)\n"
            "  --ranks-per-node R     ranks on each of them (default: the plan's world / nodes)\n"
            "  --map block|cyclic     ranks to nodes: rank / R (block, mpirun's default) or rank mod N\n"
            "  --bind                 under mpirun: bind each rank as `generate` would and report\n"
            "                         Cpus_allowed_list from /proc/self/status of every rank afterwards\n"
            "  -h, --help             this text\n"
            "\n"
            "Exit status: 0, 2 for a bad plan or file (or a split tensor group under strict), 1 internal.\n");
}

enum { OPT_PLAN = 256, OPT_SET, OPT_JSON, OPT_DUMP, OPT_LOAD, OPT_XML, OPT_NODES, OPT_RPN, OPT_MAP, OPT_BIND };

#define MAX_XML 64

static int positive(const char *what, const char *s, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 1 || v > 1 << 20) {
        fprintf(stderr, "moerun topo: %s needs a whole number >= 1 (got '%s')\n", what, s);
        return 0;
    }
    *out = (int)v;
    return 1;
}

/* Cpus_allowed_list of this process, from the kernel. */
static void cpus_allowed(char *out, size_t n) {
    snprintf(out, n, "?");
    FILE *f = fopen("/proc/self/status", "r");
    char line[1024];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "Cpus_allowed_list:", 18)) {
            char *v = line + 18 + strspn(line + 18, " \t");
            v[strcspn(v, "\n")] = 0;
            snprintf(out, n, "%s", v);
        }
    if (f) fclose(f);
}

int mr_cmd_topo(int argc, char **argv) {
    static const struct option longopts[] = {
        {"plan", 1, 0, OPT_PLAN}, {"set", 1, 0, OPT_SET},     {"json", 0, 0, OPT_JSON},
        {"dump", 1, 0, OPT_DUMP}, {"load", 1, 0, OPT_LOAD},   {"xml", 1, 0, OPT_XML},
        {"nodes", 1, 0, OPT_NODES}, {"ranks-per-node", 1, 0, OPT_RPN}, {"map", 1, 0, OPT_MAP},
        {"bind", 0, 0, OPT_BIND}, {"help", 0, 0, 'h'},        {0, 0, 0, 0},
    };
    const char *plan_path = NULL, *dump = NULL, *load = NULL, *sets[64];
    char *xml_arg = NULL;
    int n_sets = 0, json = 0, nodes = 0, rpn = 0, cyclic = 0, bind = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_PLAN: plan_path = optarg; break;
        case OPT_SET:
            if (n_sets == 64 || !strchr(optarg, '=')) {
                fprintf(stderr, "moerun topo: --set takes KEY=VALUE (got '%s')\n", optarg);
                return 2;
            }
            sets[n_sets++] = optarg;
            break;
        case OPT_JSON: json = 1; break;
        case OPT_DUMP: dump = optarg; break;
        case OPT_LOAD: load = optarg; break;
        case OPT_XML: xml_arg = optarg; break;
        case OPT_NODES: if (!positive("--nodes", optarg, &nodes)) return 2; break;
        case OPT_RPN: if (!positive("--ranks-per-node", optarg, &rpn)) return 2; break;
        case OPT_MAP:
            if (strcmp(optarg, "block") && strcmp(optarg, "cyclic")) {
                fprintf(stderr, "moerun topo: --map is block or cyclic (got '%s')\n", optarg);
                return 2;
            }
            cyclic = !strcmp(optarg, "cyclic");
            break;
        case OPT_BIND: bind = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "moerun topo: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    int from_files = load || nodes || rpn;
    if (load && xml_arg) {
        fprintf(stderr, "moerun topo: --load and --xml exclude each other\n");
        return 2;
    }
    if ((nodes || rpn) && !xml_arg) {
        fprintf(stderr, "moerun topo: --nodes and --ranks-per-node describe a topology from --xml files\n");
        return 2;
    }
    if (bind && from_files) {
        fprintf(stderr, "moerun topo: --bind needs the ranks of a real job (mpirun), not files\n");
        return 2;
    }
    const char *xml[MAX_XML];
    int n_xml = 0;
    for (char *s = xml_arg, *save = NULL, *tok; xml_arg && (tok = strtok_r(s, ",", &save)) != NULL; s = NULL) {
        if (n_xml == MAX_XML) {
            fprintf(stderr, "moerun topo: at most %d XML files\n", MAX_XML);
            return 2;
        }
        xml[n_xml++] = tok;
    }

    mr_plan *plan = malloc(sizeof *plan);
    mr_topo t = {0};
    mr_topo_placement pl = {0};
    mr_comm *world = NULL;
    char **allowed = NULL, *all = NULL;
    mr_status st = plan ? MR_OK : mr_error(MR_ERR_NOMEM, "out of memory");
    int me = 0;
    if (st == MR_OK) {
        mr_plan_init(plan);
        if (plan_path) st = mr_plan_load(plan, plan_path);
        for (int i = 0; i < n_sets && st == MR_OK; i++) {
            char key[128];
            const char *eq = strchr(sets[i], '=');
            snprintf(key, sizeof key, "%.*s", (int)(eq - sets[i]), sets[i]);
            st = mr_plan_set(plan, key, eq + 1);
        }
    }
    if (st != MR_OK) goto fail;
    if (load) {
        MR_CHECK_GOTO(mr_topo_load(&t, load), st, fail);
    } else if (from_files) {
        if (!nodes) nodes = 1;
        if (!rpn) rpn = mr_plan_world(plan) / nodes > 0 ? mr_plan_world(plan) / nodes : 1;
        MR_CHECK_GOTO(mr_topo_from_xml(&t, xml, n_xml, nodes, rpn, cyclic), st, fail);
    } else {
        if (n_xml > 1) {
            st = mr_error(MR_ERR_INPUT, "under mpirun --xml takes one file (each rank reads it for its node)");
            goto fail;
        }
        MR_CHECK_GOTO(mr_comm_mpi_init(&argc, &argv, &world), st, fail);
        mr_log_set_rank(world->rank, world->size);
        me = world->rank;
        MR_CHECK_GOTO(mr_topo_exchange(world, n_xml ? xml[0] : NULL, &t), st, fail);
    }
    /* without a plan every rank is a replica */
    if (!plan_path && !n_sets) plan->parallel.data = t.world;
    MR_CHECK_GOTO(mr_plan_check(plan, NULL, t.world), st, fail);
    MR_CHECK_GOTO(mr_topo_place(&t, plan, &pl), st, fail);
    if (bind && world) {
        mr_topo_bound b;
        MR_CHECK_GOTO(mr_topo_bind(&t, &pl, world->rank, plan->topology.bind, &b), st, fail);
        char mine[MR_TOPO_SET];
        cpus_allowed(mine, sizeof mine);
        all = calloc((size_t)world->size, MR_TOPO_SET);
        allowed = calloc((size_t)world->size, sizeof *allowed);
        if (!all || !allowed) {
            st = mr_error(MR_ERR_NOMEM, "out of memory");
            goto fail;
        }
        st = world->ops->allgather(world, mine, all, MR_TOPO_SET);
        for (int r = 0; r < world->size; r++) allowed[pl.plan_rank[r]] = all + (size_t)r * MR_TOPO_SET;
        if (st != MR_OK) goto fail;
        if (!b.applied && me == 0) fprintf(stderr, "moerun topo: rank 0 not bound: %s\n", b.why);
    }
    if (me == 0) {
        if (json)
            mr_topo_print_json(&t, plan, &pl, (const char *const *)allowed, stdout);
        else {
            mr_topo_print(&t, plan, &pl, stdout);
            for (int r = 0; allowed && r < pl.world; r++)
                printf("plan rank %d (mpi %d): Cpus_allowed_list %s\n", r, pl.slots[r].world_rank, allowed[r]);
        }
        if (dump) st = mr_topo_save(&t, dump);
    }
    if (world) { /* every rank fails with rank 0's dump */
        int bad = st != MR_OK;
        if (world->ops->allreduce_max_i32(world, &bad, 1) == MR_OK && bad && st == MR_OK)
            st = mr_error(MR_ERR_IO, "rank 0 could not write %s", dump);
    }
    if (st != MR_OK) goto fail;
    goto out;
fail:
    if (me == 0) fprintf(stderr, "moerun topo: %s\n", mr_last_error());
out:
    free(all);
    free(allowed);
    mr_topo_placement_free(&pl);
    mr_topo_free(&t);
    free(plan);
    mr_comm_destroy(world);
    if (world) mr_comm_mpi_finalize();
    return st == MR_OK ? 0 : mr_status_exit_code(st);
}
