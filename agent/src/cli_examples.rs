//! The examples at the end of every `trireme-agent` command's `--help` and
//! man page; a unit test of the binary parses each line with the real
//! flags (`trireme_net::cli_examples::check`). The local-mode commands
//! take `--location` and `--key-file` (or TRIREME_LOCATION and
//! TRIREME_KEY_FILE); the examples spell them out.

/// Command path → example lines (`#` lines are comments). Entries for
/// commands a build leaves out (a cargo feature off) are ignored.
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "",
        "trireme-agent run --config /etc/trireme/agent.toml
trireme-agent snapshots --location file:///var/backups/trireme --key-file /etc/trireme/master.key",
    ),
    (
        "run",
        "trireme-agent run --config /etc/trireme/agent.toml
trireme-agent run -c /etc/trireme/agent.toml --log info --log-format json",
    ),
    (
        "enroll",
        "# a new host, with a bootstrap token from `trireme agents token create`:
trireme-agent enroll --controller trireme.example.com:7444 --ca-file /etc/trireme/tls/ca.pem --token-file /etc/trireme/bootstrap.token --name web-1",
    ),
    (
        "check-config",
        "trireme-agent check-config --config /etc/trireme/agent.toml",
    ),
    ("man", "trireme-agent man /usr/local/share/man/man1"),
    (
        "keygen",
        "trireme-agent keygen --key-file /etc/trireme/master.key    # keep a copy apart from the backups",
    ),
    (
        "init",
        "trireme-agent init --location file:///var/backups/trireme --key-file /etc/trireme/master.key
trireme-agent init --location 's3://backups/web-1?endpoint=https://s3.example.com&region=eu-west-1&credentials=env' --key-file /etc/trireme/master.key",
    ),
    (
        "backup",
        "trireme-agent backup --location file:///var/backups/trireme --key-file /etc/trireme/master.key --source etc /etc
trireme-agent backup --location file:///var/backups/trireme --key-file /etc/trireme/master.key --source pg --stdin --stream-name pg_dumpall.sql --tag nightly",
    ),
    (
        "restore",
        "trireme-agent restore latest --source etc --target /srv/restore/etc --location file:///var/backups/trireme --key-file /etc/trireme/master.key
trireme-agent restore 1f2e3d4c --target /srv/restore/x --path /etc/nginx --location file:///var/backups/trireme --key-file /etc/trireme/master.key
trireme-agent restore latest --source pg --stdout --location file:///var/backups/trireme --key-file /etc/trireme/master.key | psql -d app_restore",
    ),
    (
        "snapshots",
        "trireme-agent snapshots --location file:///var/backups/trireme --key-file /etc/trireme/master.key
trireme-agent snapshots --source etc --json --location file:///var/backups/trireme --key-file /etc/trireme/master.key",
    ),
    (
        "ls",
        "trireme-agent ls latest /nginx -l --source etc --location file:///var/backups/trireme --key-file /etc/trireme/master.key",
    ),
    (
        "diff",
        "trireme-agent diff 1f2e3d4c latest --source etc --location file:///var/backups/trireme --key-file /etc/trireme/master.key",
    ),
    (
        "find",
        "trireme-agent find '*.json' --source uploads --since 7d --location file:///var/backups/trireme --key-file /etc/trireme/master.key",
    ),
    (
        "stats",
        "trireme-agent stats --source uploads --location file:///var/backups/trireme --key-file /etc/trireme/master.key",
    ),
    (
        "dump",
        "trireme-agent dump latest /etc/nginx/nginx.conf --source etc --location file:///var/backups/trireme --key-file /etc/trireme/master.key > nginx.conf",
    ),
    (
        "mount",
        "trireme-agent mount /mnt/trireme --location file:///var/backups/trireme --key-file /etc/trireme/master.key    # until umount /mnt/trireme",
    ),
    (
        "check",
        "trireme-agent check --location file:///var/backups/trireme --key-file /etc/trireme/master.key
trireme-agent check --deep --json --location file:///var/backups/trireme --key-file /etc/trireme/master.key",
    ),
];
