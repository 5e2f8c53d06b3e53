/* Binding really happens: every rank places itself (mr_topo_job_setup, as
 * moerun generate does) and then reads what the kernel says, for every
 * thread it has (one started before binding, one after):
 * Cpus_allowed_list of /proc/self/task/T/status, and its memory policy
 * (get_mempolicy).
 *   mpirun --bind-to none -np N test-binding                 ranks split the
 *       node's cores: disjoint, same size, together all of them (N <= cores)
 *   mpirun --bind-to none -np N test-binding '0;0;1;1'       each rank's
 *       expected list, by rank (for a machine file loaded with
 *       HWLOC_XMLFILE and HWLOC_THISSYSTEM=1)
 * Exit 77 when the machine has fewer CPUs than the check needs. */
#define _GNU_SOURCE
#include <dirent.h>
#include <hwloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "harness.h"
#include "runtime/comm.h"
#include "topology/topology.h"

static atomic_int stop;

static void *idle(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) usleep(1000);
    return NULL;
}

static int read_allowed(const char *status_path, char *out, size_t n) {
    FILE *f = fopen(status_path, "r");
    char line[1024];
    int found = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "Cpus_allowed_list:", 18)) {
            char *v = line + 18 + strspn(line + 18, " \t");
            v[strcspn(v, "\n")] = 0;
            snprintf(out, n, "%s", v);
            found = 1;
        }
    if (f) fclose(f);
    return found;
}

static int same_set(const char *a, const char *b) {
    hwloc_bitmap_t x = hwloc_bitmap_alloc(), y = hwloc_bitmap_alloc();
    int ok = hwloc_bitmap_list_sscanf(x, a) == 0 && hwloc_bitmap_list_sscanf(y, b) == 0 && hwloc_bitmap_isequal(x, y);
    hwloc_bitmap_free(x);
    hwloc_bitmap_free(y);
    return ok;
}

int main(int argc, char **argv) {
    pthread_t before, after;
    pthread_create(&before, NULL, idle, NULL);
    mr_comm *world = NULL;
    if (mr_comm_mpi_init(&argc, &argv, &world) != MR_OK) {
        fprintf(stderr, "MPI: %s\n", mr_last_error());
        return 1;
    }
    const char *expect = argc > 1 ? argv[1] : NULL;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    int need = expect ? 2 : world->size;
    if (online < need) {
        if (world->rank == 0) printf("SKIP: %ld CPUs online, the check needs %d\n", online, need);
        mr_comm_destroy(world);
        mr_comm_mpi_finalize();
        return 77;
    }
    mr_plan plan;
    mr_plan_init(&plan);
    plan.parallel.data = world->size;
    mr_topo_job job;
    mr_status st = mr_topo_job_setup(world, &plan, &job);
    CHECK(st == MR_OK, "setup: %s", mr_last_error());
    if (st != MR_OK) return mr_test_summary();
    pthread_create(&after, NULL, idle, NULL);
    const mr_topo_slot *sl = &job.pl.slots[job.plan_rank];
    CHECK(job.bound.applied, "rank %d not bound: %s", world->rank, job.bound.why);

    /* every thread of this process, from the kernel */
    char mine[MR_TOPO_SET] = "?", path[512], got[MR_TOPO_SET];
    int threads = 0;
    DIR *d = opendir("/proc/self/task");
    for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/status", e->d_name);
        if (!read_allowed(path, got, sizeof got)) continue;
        threads++;
        CHECK(same_set(got, sl->cpus), "rank %d thread %s: Cpus_allowed_list %s, placed on %s", world->rank, e->d_name,
              got, sl->cpus);
        if (!strcmp(mine, "?")) snprintf(mine, sizeof mine, "%s", got);
    }
    if (d) closedir(d);
    CHECK(threads >= 3, "rank %d saw %d threads", world->rank, threads);
    /* memory: preferred or bound to the slot's NUMA node */
    if (sl->numa >= 0) {
        int mode = -1;
        unsigned long mask[16] = {0};
        long r = syscall(SYS_get_mempolicy, &mode, mask, (unsigned long)(sizeof mask * 8), NULL, 0UL);
        int os = job.topo.nodes[job.topo.ranks[world->rank].node].numa[sl->numa].os_index;
        if (r == 0 && job.bound.mem_bound)
            CHECK((mode == 1 || mode == 2 || mode == 5) && (mask[os / 64] >> (os % 64) & 1),
                  "rank %d memory policy %d mask %lx, want NUMA node %d", world->rank, mode, mask[0], os);
        else
            printf("rank %d: memory binding not checked (%s)\n", world->rank,
                   r != 0 ? "get_mempolicy refused" : job.bound.why);
    }

    /* every rank's set, at rank 0 */
    char *all = calloc((size_t)world->size, MR_TOPO_SET);
    CHECK(world->ops->allgather(world, mine, all, MR_TOPO_SET) == MR_OK, "allgather");
    if (world->rank == 0) {
        hwloc_bitmap_t u = hwloc_bitmap_alloc(), x = hwloc_bitmap_alloc(), node = hwloc_bitmap_alloc();
        hwloc_bitmap_list_sscanf(node, job.topo.nodes[0].cpus);
        char *e = expect ? strdup(expect) : NULL, *save = NULL, *tok = e ? strtok_r(e, ";", &save) : NULL;
        for (int r = 0; r < world->size; r++) {
            const char *s = all + (size_t)r * MR_TOPO_SET;
            printf("rank %d: Cpus_allowed_list %s\n", r, s);
            if (expect) {
                CHECK(tok && same_set(s, tok), "rank %d bound to %s, expected %s", r, s, tok ? tok : "(none)");
                tok = strtok_r(NULL, ";", &save);
                continue;
            }
            hwloc_bitmap_list_sscanf(x, s);
            CHECK(!hwloc_bitmap_intersects(u, x), "rank %d's CPUs %s overlap another rank's", r, s);
            CHECK(hwloc_bitmap_weight(x) == hwloc_bitmap_weight(node) / world->size, "rank %d has %d CPUs of %d", r,
                  hwloc_bitmap_weight(x), hwloc_bitmap_weight(node));
            hwloc_bitmap_or(u, u, x);
        }
        if (!expect && world->size > 0 && hwloc_bitmap_weight(node) % world->size == 0)
            CHECK(hwloc_bitmap_isequal(u, node), "ranks together do not cover the node");
        free(e);
        hwloc_bitmap_free(u);
        hwloc_bitmap_free(x);
        hwloc_bitmap_free(node);
    }
    free(all);
    atomic_store(&stop, 1);
    pthread_join(before, NULL);
    pthread_join(after, NULL);
    int failed = mr_test_fail > 0;
    world->ops->allreduce_max_i32(world, &failed, 1);
    mr_topo_job_free(&job);
    mr_comm_destroy(world);
    mr_comm_mpi_finalize();
    int rc = mr_test_summary();
    return rc ? rc : failed;
}
