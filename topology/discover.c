/* One node from hwloc: allowed cores by NUMA node, GPUs, NICs, and the GPU
 * to NIC pairing by PCI distance.  See topology.h. */
#define _GNU_SOURCE
#include <hwloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "topology/topology-internal.h"

void mr_topo_set_string(hwloc_const_bitmap_t set, char *out) {
    if (hwloc_bitmap_list_snprintf(out, MR_TOPO_SET, set) >= MR_TOPO_SET) {
        /* a set too scattered for the string: keep it parseable */
        char *comma = strrchr(out, ',');
        if (comma) *comma = 0;
    }
}

hwloc_bitmap_t mr_topo_set_parse(const char *list) {
    hwloc_bitmap_t s = hwloc_bitmap_alloc();
    if (s && hwloc_bitmap_list_sscanf(s, list) != 0) {
        hwloc_bitmap_free(s);
        return NULL;
    }
    return s;
}

static void busid_of(hwloc_obj_t pci, char *out) {
    snprintf(out, MR_TOPO_NAME, "%04x:%02x:%02x.%01x", pci->attr->pcidev.domain, pci->attr->pcidev.bus,
             pci->attr->pcidev.dev, pci->attr->pcidev.func);
}

static hwloc_obj_t pci_parent(hwloc_obj_t o) {
    for (hwloc_obj_t p = o ? o->parent : NULL; p; p = p->parent)
        if (p->type == HWLOC_OBJ_PCI_DEVICE) return p;
    return NULL;
}

/* Hops from a and b up to their common ancestor: small = near. */
static int pci_hops(hwloc_obj_t a, hwloc_obj_t b) {
    int hops = 0;
    for (hwloc_obj_t x = a; x; x = x->parent, hops++) {
        int down = 0;
        for (hwloc_obj_t y = b; y; y = y->parent, down++)
            if (x == y) return hops + down;
    }
    return 1 << 20;
}

/* Index into node->numa[] of the first NUMA node in `nodeset`. */
static int numa_index(const mr_topo_node *node, hwloc_const_nodeset_t nodeset) {
    int first = nodeset ? hwloc_bitmap_first(nodeset) : -1;
    for (int i = 0; i < node->n_numa; i++)
        if (node->numa[i].os_index == first) return i;
    return -1;
}

static int is_nvidia_gpu(hwloc_obj_t pci) {
    unsigned cls = pci->attr->pcidev.class_id;
    return pci->attr->pcidev.vendor_id == 0x10de && (cls == 0x0300 || cls == 0x0302);
}

/* GPUs: CUDA OS devices (cudaN, in N order), else NVML (nvmlN), else the
 * NVIDIA display/3D PCI functions in bus order. */
static void find_gpus(hwloc_topology_t t, mr_topo_node *node, hwloc_obj_t *pcis) {
    static const char *const prefixes[] = {"cuda", "nvml"};
    for (int k = 0; k < 2 && node->n_gpus == 0; k++) {
        size_t plen = strlen(prefixes[k]);
        /* by the number after the prefix, not by discovery order */
        for (int want = 0; want < 4 * MR_TOPO_MAX_GPUS && node->n_gpus < MR_TOPO_MAX_GPUS; want++) {
            for (hwloc_obj_t o = NULL; (o = hwloc_get_next_osdev(t, o)) != NULL;) {
                if (!o->name || strncmp(o->name, prefixes[k], plen) != 0) continue;
                char *end;
                long num = strtol(o->name + plen, &end, 10);
                if (*end || num != want) continue;
                hwloc_obj_t pci = pci_parent(o);
                mr_topo_gpu *g = &node->gpus[node->n_gpus];
                mr_topo_copy(g->name, sizeof g->name, o->name);
                const char *model = hwloc_obj_get_info_by_name(o, "GPUModel");
                mr_topo_copy(g->model, sizeof g->model, model ? model : "");
                if (pci) busid_of(pci, g->busid);
                pcis[node->n_gpus++] = pci;
                break;
            }
        }
    }
    if (node->n_gpus == 0) {
        for (hwloc_obj_t o = NULL; (o = hwloc_get_next_pcidev(t, o)) != NULL && node->n_gpus < MR_TOPO_MAX_GPUS;) {
            if (!is_nvidia_gpu(o)) continue;
            mr_topo_gpu *g = &node->gpus[node->n_gpus];
            busid_of(o, g->busid);
            mr_topo_copy(g->name, sizeof g->name, g->busid);
            pcis[node->n_gpus++] = o;
        }
    }
    for (int i = 0; i < node->n_gpus; i++) {
        mr_topo_gpu *g = &node->gpus[i];
        hwloc_obj_t anc = pcis[i] ? hwloc_get_non_io_ancestor_obj(t, pcis[i]) : NULL;
        g->numa = anc ? numa_index(node, anc->nodeset) : -1;
        g->nic = -1;
        if (anc) {
            hwloc_bitmap_t s = hwloc_bitmap_alloc();
            hwloc_bitmap_and(s, anc->cpuset, hwloc_topology_get_allowed_cpuset(t));
            mr_topo_set_string(s, g->cpus);
            hwloc_bitmap_free(s);
        } else {
            mr_topo_copy(g->cpus, sizeof g->cpus, node->cpus);
        }
    }
}

/* NICs: OpenFabrics devices and network interfaces behind PCI (virtual
 * interfaces have no PCI function and are not NICs here); a network
 * interface of the same PCI function as an OpenFabrics device is that
 * device's netdev. */
static void find_nics(hwloc_topology_t t, mr_topo_node *node, hwloc_obj_t *pcis) {
    for (int pass = 0; pass < 2; pass++) {
        hwloc_obj_osdev_type_t want = pass == 0 ? HWLOC_OBJ_OSDEV_OPENFABRICS : HWLOC_OBJ_OSDEV_NETWORK;
        for (hwloc_obj_t o = NULL; (o = hwloc_get_next_osdev(t, o)) != NULL;) {
            if (o->attr->osdev.type != want || !o->name) continue;
            hwloc_obj_t pci = pci_parent(o);
            if (!pci) continue;
            int same = -1;
            for (int i = 0; i < node->n_nics; i++)
                if (pcis[i] == pci) same = i;
            if (same >= 0) {
                if (!node->nics[same].netdev[0]) mr_topo_copy(node->nics[same].netdev, MR_TOPO_NAME, o->name);
                continue;
            }
            if (node->n_nics == MR_TOPO_MAX_NICS) continue;
            mr_topo_nic *n = &node->nics[node->n_nics];
            mr_topo_copy(n->name, sizeof n->name, o->name);
            if (pass == 1) mr_topo_copy(n->netdev, sizeof n->netdev, o->name);
            n->fabric = pass == 0;
            busid_of(pci, n->busid);
            hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(t, pci);
            n->numa = anc ? numa_index(node, anc->nodeset) : -1;
            pcis[node->n_nics++] = pci;
        }
    }
}

/* Each GPU's NIC: fewest PCI hops; then an OpenFabrics one; then the
 * first NIC not yet paired; then the lowest index. */
static void pair_gpus(mr_topo_node *node, hwloc_obj_t *gpu_pci, hwloc_obj_t *nic_pci) {
    int taken[MR_TOPO_MAX_NICS] = {0};
    for (int g = 0; g < node->n_gpus; g++) {
        int best = -1, best_key = 0;
        for (int n = 0; n < node->n_nics; n++) {
            int hops = gpu_pci[g] && nic_pci[n] ? pci_hops(gpu_pci[g], nic_pci[n]) : 1 << 20;
            if (node->gpus[g].numa >= 0 && node->nics[n].numa != node->gpus[g].numa) hops += 1 << 10;
            int key = hops * 4 + (node->nics[n].fabric ? 0 : 2) + (taken[n] ? 1 : 0);
            if (best < 0 || key < best_key) best = n, best_key = key;
        }
        node->gpus[g].nic = best;
        if (best >= 0) taken[best] = 1;
    }
}

mr_status mr_topo_discover(const char *xml, mr_topo_node *node, char *bound) {
    memset(node, 0, sizeof *node);
    hwloc_topology_t t;
    if (hwloc_topology_init(&t) != 0) return mr_error(MR_ERR_INTERNAL, "hwloc_topology_init failed");
    hwloc_topology_set_io_types_filter(t, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
    if (xml && hwloc_topology_set_xml(t, xml) != 0) {
        hwloc_topology_destroy(t);
        return mr_error(MR_ERR_INPUT, "%s: cannot read as an hwloc XML topology", xml);
    }
    if (hwloc_topology_load(t) != 0) {
        hwloc_topology_destroy(t);
        return xml ? mr_error(MR_ERR_INPUT, "%s: not a valid hwloc XML topology", xml)
                   : mr_error(MR_ERR_INTERNAL, "hwloc_topology_load failed");
    }
    hwloc_const_cpuset_t allowed = hwloc_topology_get_allowed_cpuset(t);
    hwloc_obj_t root = hwloc_get_root_obj(t);
    const char *host = hwloc_obj_get_info_by_name(root, "HostName");
    if (xml || !hwloc_topology_is_thissystem(t)) {
        mr_topo_copy(node->host, sizeof node->host, host ? host : "xml");
    } else {
        char h[256] = "";
        gethostname(h, sizeof h - 1);
        h[strcspn(h, ".")] = 0; /* short name, as in host lists */
        mr_topo_copy(node->host, sizeof node->host, h[0] ? h : "localhost");
    }
    mr_topo_set_string(allowed, node->cpus);
    node->pus = hwloc_bitmap_weight(allowed);
    node->cores = hwloc_get_nbobjs_inside_cpuset_by_type(t, allowed, HWLOC_OBJ_CORE);
    if (node->cores <= 0) node->cores = node->pus;

    for (int i = 0; i < MR_TOPO_MAX_PUS; i++) node->pu_core[i] = -1;
    int n_core = 0;
    for (hwloc_obj_t o = NULL; (o = hwloc_get_next_obj_by_type(t, HWLOC_OBJ_CORE, o)) != NULL;) {
        int any = 0;
        for (int pu = hwloc_bitmap_first(o->cpuset); pu >= 0; pu = hwloc_bitmap_next(o->cpuset, pu))
            if (pu < MR_TOPO_MAX_PUS && hwloc_bitmap_isset(allowed, (unsigned)pu)) node->pu_core[pu] = (short)n_core, any = 1;
        n_core += any;
    }
    if (n_core == 0) /* no core objects: every PU is a core */
        for (int pu = hwloc_bitmap_first(allowed); pu >= 0 && pu < MR_TOPO_MAX_PUS; pu = hwloc_bitmap_next(allowed, pu))
            node->pu_core[pu] = (short)n_core++;
    hwloc_bitmap_t s = hwloc_bitmap_alloc();
    for (hwloc_obj_t o = NULL; (o = hwloc_get_next_obj_by_type(t, HWLOC_OBJ_NUMANODE, o)) != NULL;) {
        if (node->n_numa == MR_TOPO_MAX_NUMA) break;
        hwloc_bitmap_and(s, o->cpuset, allowed);
        if (hwloc_bitmap_iszero(s)) continue; /* memory-only or not allowed */
        mr_topo_numa *n = &node->numa[node->n_numa++];
        n->os_index = (int)o->os_index;
        n->cores = hwloc_get_nbobjs_inside_cpuset_by_type(t, s, HWLOC_OBJ_CORE);
        if (n->cores <= 0) n->cores = hwloc_bitmap_weight(s);
        mr_topo_set_string(s, n->cpus);
    }
    if (node->n_numa == 0) { /* no NUMA information: one node of everything */
        node->n_numa = 1;
        node->numa[0].cores = node->cores;
        mr_topo_copy(node->numa[0].cpus, MR_TOPO_SET, node->cpus);
    }
    if (bound) {
        if (hwloc_topology_is_thissystem(t) && hwloc_get_cpubind(t, s, HWLOC_CPUBIND_PROCESS) == 0 &&
            !hwloc_bitmap_iszero(s))
            mr_topo_set_string(s, bound);
        else
            mr_topo_copy(bound, MR_TOPO_SET, node->cpus);
    }
    hwloc_bitmap_free(s);

    hwloc_obj_t gpu_pci[MR_TOPO_MAX_GPUS] = {0}, nic_pci[MR_TOPO_MAX_NICS] = {0};
    find_gpus(t, node, gpu_pci);
    find_nics(t, node, nic_pci);
    pair_gpus(node, gpu_pci, nic_pci);
    hwloc_topology_destroy(t);
    if (node->pus <= 0) return mr_error(MR_ERR_INTERNAL, "hwloc reports no CPU for this process");
    return MR_OK;
}

mr_status mr_topo_local_cpus(mr_local_cpus *out) {
    hwloc_topology_t t;
    if (hwloc_topology_init(&t) != 0) return mr_error(MR_ERR_INTERNAL, "hwloc_topology_init failed");
    if (hwloc_topology_load(t) != 0) {
        hwloc_topology_destroy(t);
        return mr_error(MR_ERR_INTERNAL, "hwloc_topology_load failed");
    }
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    if (!set || hwloc_get_cpubind(t, set, HWLOC_CPUBIND_PROCESS) != 0) {
        /* No binding information: everything the topology allows. */
        hwloc_bitmap_copy(set, hwloc_topology_get_allowed_cpuset(t));
    }
    out->pus = hwloc_bitmap_weight(set);
    out->cores = hwloc_get_nbobjs_inside_cpuset_by_type(t, set, HWLOC_OBJ_CORE);
    if (out->cores <= 0) out->cores = out->pus;
    out->numa_nodes = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE);
    hwloc_bitmap_free(set);
    hwloc_topology_destroy(t);
    if (out->pus <= 0) return mr_error(MR_ERR_INTERNAL, "hwloc reports no CPU for this process");
    return MR_OK;
}
