//! The examples at the end of every `trireme` command's `--help` and man
//! page (attached by [`crate::command`]); a unit test parses each line
//! with the real flags (`trireme_net::cli_examples::check`).

/// Command path → example lines (`#` lines are comments).
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "",
        "# where the controller is and who you are, once per shell:
export TRIREME_CONTROLLER=trireme.example.com:7443 TRIREME_TLS_DIR=~/.trireme TRIREME_CERT_NAME=alice
trireme status
trireme --controller trireme.example.com:7443 --tls-dir ~/.trireme --name alice backup run web-1/uploads --wait",
    ),
    ("agents", "trireme agents ls"),
    (
        "agents ls",
        "trireme agents ls
trireme agents ls -o json    # with certificate_not_after per agent",
    ),
    (
        "agents token",
        "trireme agents token create --name-glob 'node-*' --ttl 24h --uses 20",
    ),
    (
        "agents token create",
        "trireme agents token create --agent web-1    # one use, valid for an hour
trireme agents token create --name-glob 'node-*' --ttl 24h --uses 20",
    ),
    ("agents token ls", "trireme agents token ls"),
    (
        "agents token revoke",
        "trireme agents token revoke 7f3a9c21    # the id `trireme agents token ls` shows",
    ),
    ("audit", "trireme audit ls --since 24h"),
    (
        "audit ls",
        "trireme audit ls --since 24h
trireme audit ls --actor alice --limit 50 --json",
    ),
    (
        "audit verify",
        "trireme audit verify    # exit 1 naming the first edited or missing entry",
    ),
    ("backup", "trireme backup run web-1/uploads --wait"),
    (
        "backup run",
        "trireme backup run web-1/uploads --wait
trireme backup run db-1/postgres --full --tag before-upgrade",
    ),
    ("catalog", "trireme catalog rebuild --from offsite --totp 123456"),
    (
        "catalog rebuild",
        "# a new controller with an empty catalog, from one location's snapshots:
trireme catalog rebuild --from offsite --totp 123456",
    ),
    (
        "cert",
        "trireme cert issue --dir /srv/trireme-ca --role agent --name web-1 --out web-1/",
    ),
    (
        "cert init-ca",
        "trireme cert init-ca --dir /srv/trireme-ca    # once; keep ca.key offline",
    ),
    (
        "cert issue",
        "trireme cert issue --dir /srv/trireme-ca --role controller --name trireme.example.com --out ctl/
trireme cert issue --dir /srv/trireme-ca --role agent --name web-1 --out web-1/
trireme cert issue --dir /srv/trireme-ca --role operator --name alice --days 90 --out alice/",
    ),
    (
        "cert ls",
        "trireme cert ls --dir /srv/trireme-ca
trireme cert ls --dir /srv/trireme-ca --output json",
    ),
    (
        "cert renew",
        "# 30 days before web-1's certificate expires (`trireme status` says so):
trireme cert renew --dir /srv/trireme-ca --name web-1 --out web-1/",
    ),
    (
        "cert revoke",
        "trireme cert revoke --dir /srv/trireme-ca --name web-1    # then copy crl.pem to the controller
trireme cert revoke --dir /srv/trireme-ca --serial 4f1c9a0b2d",
    ),
    (
        "completions",
        "trireme completions bash > /etc/bash_completion.d/trireme",
    ),
    (
        "diff",
        "trireme diff 1f2e3d4c 3090544c    # + added, - removed, M content, m metadata only",
    ),
    ("drill", "trireme drill run --location offsite --wait > drill.md"),
    (
        "drill annotate",
        "trireme drill annotate drill-0193a7c2 --lessons \"Staging Redis needs 2 GiB more\" --participant carol",
    ),
    ("drill ls", "trireme drill ls"),
    (
        "drill run",
        "trireme drill run --location offsite --wait --totp 123456 > drill.md    # exit 1 if it failed",
    ),
    (
        "drill show",
        "trireme drill show 0193a7c2 --html > drill.html",
    ),
    (
        "dump",
        "trireme dump 3090544c /etc/nginx/nginx.conf > nginx.conf
trireme dump 3090544c /etc/nginx > nginx.tar    # a directory comes as tar",
    ),
    (
        "find",
        "trireme find '*.zip' --source web-1/uploads --since 7d
trireme find '/srv/**/export-*.json' --until 2026-11-30T00:00:00Z",
    ),
    ("jobs", "trireme jobs ls --state failed"),
    ("jobs cancel", "trireme jobs cancel 01a2    # any unique id prefix"),
    (
        "jobs ls",
        "trireme jobs ls --state failed
trireme jobs ls --source web-1/uploads --limit 20",
    ),
    ("jobs show", "trireme jobs show 01a2"),
    ("jobs watch", "trireme jobs watch 01a2"),
    ("key", "trireme key export --out trireme-recovery.json --totp 123456"),
    (
        "key export",
        "umask 077
trireme key export --out trireme-recovery.json --totp 123456
trireme key export --out trireme-recovery.json --passphrase-file /root/recovery.pass --totp 123456",
    ),
    (
        "key import",
        "# on a new controller host, before its first start:
trireme key import --in trireme-recovery.json --key-file /etc/trireme/master.key",
    ),
    ("locations", "trireme locations ls"),
    (
        "locations ls",
        "trireme locations ls    # reachable, objects, bytes, last sync and verification, problems",
    ),
    (
        "ls",
        "trireme ls 3090544c /exports -l
trireme ls 3090544c /etc -R --limit 1000",
    ),
    ("man", "trireme man /usr/local/share/man/man1"),
    ("mfa", "trireme mfa enroll"),
    (
        "mfa confirm",
        "trireme mfa confirm 123456    # the code your authenticator shows",
    ),
    (
        "mfa enroll",
        "trireme mfa enroll    # shows the secret and an otpauth:// URI once",
    ),
    ("policy", "trireme policy apply -f policy.toml"),
    (
        "policy apply",
        "trireme policy apply -f policy.toml
trireme policy apply --file /etc/trireme/policy.toml --totp 654321",
    ),
    ("policy ls", "trireme policy ls    # with the next run of each"),
    (
        "prune",
        "trireme prune --dry-run    # what would go, where, and why the rest is kept
trireme prune --source db-1/mongodb --totp 123456
trireme -o json prune --show-kept --totp 123456",
    ),
    (
        "restore",
        "trireme restore 3090544c --to web-2:/srv/restore/uploads --wait
trireme restore 3090544c --to web-1:source:uploads --overwrite if-changed --wait --totp 123456
trireme restore 3090544c --to web-1:/srv/restore/etc --include '/etc/**/*.conf' --wait
trireme restore 3090544c --to web-2:/srv/restore/app --path /srv/app --exclude cache --exclude '*.tmp'
trireme restore --platform --to staging --from other-region --at 2026-12-04T10:40:00Z --wait --totp 123456",
    ),
    ("restore-test", "trireme restore-test run cache-1/redis --wait"),
    (
        "restore-test ls",
        "trireme restore-test ls
trireme restore-test ls cache-1/redis --limit 10",
    ),
    (
        "restore-test run",
        "trireme restore-test run cache-1/redis --wait --totp 123456    # exit 1 if it fails",
    ),
    ("snapshots", "trireme snapshots ls web-1/uploads"),
    (
        "snapshots forget",
        "trireme snapshots forget 3090544c --totp 123456    # the manifest only; packs go at the next prune",
    ),
    (
        "snapshots hold",
        "trireme snapshots hold 3090544c --reason 'case 4711' --until 90d
trireme snapshots hold 3090544c --reason legal-hold",
    ),
    (
        "snapshots ls",
        "trireme snapshots ls web-1/uploads
trireme snapshots ls --tag before-upgrade --since 30d
trireme snapshots ls --host web-1 --limit 20 -o json",
    ),
    ("snapshots show", "trireme snapshots show 3090544c"),
    (
        "snapshots tag",
        "trireme snapshots tag 3090544c --add before-upgrade --remove nightly",
    ),
    (
        "snapshots unhold",
        "trireme snapshots unhold 3090544c --totp 123456",
    ),
    ("sources", "trireme sources ls --agent web-1"),
    (
        "sources ls",
        "trireme sources ls
trireme sources ls --agent web-1",
    ),
    (
        "stats",
        "trireme stats --source web-1/uploads    # logical, unique and stored bytes, ratios
trireme stats 3090544c",
    ),
    (
        "status",
        "trireme status    # agents, jobs, 3-2-1 state, objectives and every problem to act on
trireme status -o json",
    ),
    (
        "verify",
        "trireme verify    # HEAD every object at every location, repair from good copies
trireme verify --deep --location loc2
trireme verify --snapshot 3090544c",
    ),
];
