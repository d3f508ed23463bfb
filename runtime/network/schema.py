"""Tables of the ``networks`` component (append-only migrations)."""

from __future__ import annotations

COMPONENT = "networks"

MIGRATIONS = [
    """
    CREATE TABLE networks (
        name        TEXT PRIMARY KEY,
        id          TEXT NOT NULL UNIQUE,
        bridge      TEXT NOT NULL UNIQUE,
        subnet      TEXT NOT NULL,
        gateway     TEXT NOT NULL,
        is_default  INTEGER NOT NULL DEFAULT 0,
        created     REAL NOT NULL
    );
    -- An address belongs to a container until disconnect(release=True):
    -- stable across stop/start, moved to a successor by takeover().
    CREATE TABLE network_leases (
        network      TEXT NOT NULL REFERENCES networks(name),
        ip           TEXT NOT NULL,
        container_id TEXT NOT NULL,
        hostname     TEXT NOT NULL,
        aliases      TEXT NOT NULL DEFAULT '[]',
        ports        TEXT NOT NULL DEFAULT '[]',
        created      REAL NOT NULL,
        PRIMARY KEY (network, ip),
        UNIQUE (network, container_id)
    );
    -- What is live on the host for a container.  Written 'pending' before
    -- any link or namespace is made, 'up' when all of it exists, deleted
    -- after all of it is gone: a crash leaves a row that says what to undo.
    CREATE TABLE network_attachments (
        container_id TEXT PRIMARY KEY,
        network      TEXT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('pending', 'up')),
        netns_path   TEXT,
        host_veth    TEXT,
        ip           TEXT,
        gateway      TEXT,
        prefixlen    INTEGER,
        mac          TEXT,
        hostname     TEXT NOT NULL,
        aliases      TEXT NOT NULL DEFAULT '[]',
        hosts_path   TEXT NOT NULL,
        ports        TEXT NOT NULL DEFAULT '[]',
        created      REAL NOT NULL
    );
    CREATE INDEX network_attachments_by_network ON network_attachments(network);
    """,
    # The operator's --add-host lines ([[host, ip], ...]): the hosts file is
    # rendered again whenever a peer comes or goes, so they live in the row.
    """
    ALTER TABLE network_attachments ADD COLUMN extra_hosts TEXT NOT NULL DEFAULT '[]';
    """,
    # A container's namespace and veth made ahead of its start (an upgrade's
    # successor while the old version serves, NetworkManager.stage): the
    # address configured inside, the host end not on the bridge yet.  The
    # process that staged it owns it: reconcile removes a dead owner's.
    """
    CREATE TABLE network_staged (
        container_id TEXT PRIMARY KEY,
        network      TEXT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('pending', 'up')),
        netns_path   TEXT NOT NULL,
        host_veth    TEXT NOT NULL,
        ip           TEXT NOT NULL,
        gateway      TEXT NOT NULL,
        prefixlen    INTEGER NOT NULL,
        mac          TEXT NOT NULL,
        owner_pid    INTEGER NOT NULL,
        owner_start  TEXT,
        created      REAL NOT NULL
    );
    """,
]

#: the schema version from which ``network_staged`` exists
STAGED_VERSION = 3
