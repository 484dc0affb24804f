/** Layout of relevo's keys in the coordination store, one place for all of them. */
export function clusterKeys(cluster: string) {
  const root = `/relevo/${cluster}/`;
  return {
    root,
    /** Created atomically by the member that initialises the cluster; holds the system identifier. */
    initialize: `${root}initialize`,
    /** The leader lease: present while a primary holds it, attached to a store lease. */
    leader: `${root}leader`,
    /** Cluster-wide settings changeable at run time (`relevo config set`). */
    config: `${root}config`,
    /** Prefix of every member's published status, each attached to that agent's lease. */
    membersPrefix: `${root}members/`,
    member: (name: string) => `${root}members/${name}`,
    /** When each member was last seen by a primary: drives the slot grace period. */
    slots: `${root}slots`,
    /** Synchronous standby set, written by the primary before it changes synchronous_standby_names. */
    sync: `${root}sync`,
    /** Quorum commit: which standbys acknowledge, and how many of them hold each acknowledged commit. */
    quorum: `${root}quorum`,
    /** The primary's last known WAL position. */
    optime: `${root}optime`,
    /** Timeline history: one entry per promotion. */
    history: `${root}history`,
    /** A pending switchover or failover request. */
    failover: `${root}failover`,
    /** Standby cluster: the link to the source as its standby leader last saw it (docs/sites.md). */
    siteLink: `${root}site/link`,
    /** A cluster turned into a standby cluster: where its primary shut down (the new source must replay past it). */
    siteDemotion: `${root}site/demotion`,
    /** Standby clusters that follow this one register here (written by their standby leaders, in this cluster's store). */
    standbyClustersPrefix: `${root}site/standby-clusters/`,
    standbyCluster: (name: string) => `${root}site/standby-clusters/${name}`,
    /** The cluster CA certificate (public), created once: a member with another CA refuses to start. */
    ca: `${root}tls/ca`,
    /** `relevo certs rotate` bumps this generation; each agent re-issues its member certificate once per bump. */
    certsRotation: `${root}tls/rotation`,
    /** `relevo certs rotate --ca`: the signed, phased CA rotation (src/tls/ca-rotation.ts), written by compare-and-swap. */
    caRotation: `${root}tls/ca-rotation`,
    /** What each agent applied of the CA rotation (one record per member, written by that member's agent). */
    caRotationReportsPrefix: `${root}tls/ca-rotation-reports/`,
    caRotationReport: (member: string) => `${root}tls/ca-rotation-reports/${member}`,
    /**
     * Where routers configured for this cluster send clients (src/cluster/route.ts):
     * absent = this cluster; written by `relevo upgrade` (compare-and-swap) to hold
     * new writes for a moment and to point routers at another cluster.
     */
    route: `${root}route`,
    /** The state of a blue/green major-version upgrade from this cluster (src/upgrade/state.ts). */
    upgrade: `${root}upgrade`,
    /** Prefix of routers' published statistics. */
    routersPrefix: `${root}routers/`,
    router: (name: string) => `${root}routers/${name}`,
    /**
     * The event log (src/cluster/events.ts). Outside the cluster subtree on
     * purpose: agents read that subtree every loop, and the log is large.
     */
    events: `/relevo-events/${cluster}`,
  };
}

export type ClusterKeys = ReturnType<typeof clusterKeys>;
