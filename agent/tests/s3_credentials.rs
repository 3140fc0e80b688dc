//! `credentials=default` on an S3 location: the agent resolves its
//! credentials through the AWS SDK's default chain on its own host, as an
//! agent on a Kubernetes node or an EC2 instance would (web identity,
//! instance profile). Here the chain finds them in a shared credentials
//! file (`AWS_SHARED_CREDENTIALS_FILE`, the chain's profile step), against
//! a real Garage server; with nothing anywhere, the backup fails at once
//! with a message naming the chain. Web identity (IRSA) and instance
//! profiles need AWS STS / IMDS, which cannot run here: not tested.

use std::process::{Command, Output};

use trireme_testkit::garage::Garage;

const AGENT: &str = env!("CARGO_BIN_EXE_trireme-agent");

fn agent(
    dir: &std::path::Path,
    location: &str,
    profile_file: Option<&std::path::Path>,
    args: &[&str],
) -> Output {
    let mut c = Command::new(AGENT);
    c.args(args)
        .env("TRIREME_KEY_FILE", dir.join("key"))
        .env("TRIREME_LOCATION", location)
        // Nothing but the file below: no keys in the environment, no
        // instance metadata service (it would be probed and time out).
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env_remove("AWS_ROLE_ARN")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", dir.join("no-config"))
        .env("HOME", dir)
        .env_remove("RUST_LOG");
    match profile_file {
        Some(f) => c.env("AWS_SHARED_CREDENTIALS_FILE", f),
        None => c.env("AWS_SHARED_CREDENTIALS_FILE", dir.join("no-credentials")),
    };
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

#[test]
fn the_sdk_chain_finds_the_agents_own_credentials() {
    let garage = Garage::start(1);
    let inst = garage.instance(1);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = format!(
        "s3://{}/chain?endpoint={}&region={}&allow_http=true&credentials=default",
        inst.bucket, inst.endpoint, inst.region
    );
    let profile = d.join("aws-credentials");
    std::fs::write(
        &profile,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            inst.access_key_id, inst.secret_access_key
        ),
    )
    .unwrap();
    let src = d.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), "hello through the chain\n".repeat(1000)).unwrap();

    // Nothing to find: a clear failure, and nothing written.
    let out = agent(d, &url, None, &["keygen"]);
    assert!(out.status.success(), "{}", text(&out));
    let started = std::time::Instant::now();
    let out = agent(d, &url, None, &["init"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.to_lowercase().contains("credentials"), "{t}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "no credentials took {:?} to report",
        started.elapsed()
    );

    // The chain's profile step finds the agent's own file.
    let out = agent(d, &url, Some(&profile), &["init"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = agent(
        d,
        &url,
        Some(&profile),
        &["backup", "--source", "vol", "--json", src.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    let snap: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = snap["snapshot"].as_str().unwrap().to_string();

    // Independently of the chain: the objects are in the bucket, read with
    // the static keys of Garage's credentials file.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let keys: Vec<String> = rt.block_on(async {
        let backend = trireme_common::backend::S3Backend::new(garage.settings(1, "chain"))
            .await
            .unwrap();
        let mut all = Vec::new();
        for kind in [
            trireme_common::ObjectKind::Snapshot,
            trireme_common::ObjectKind::Pack,
        ] {
            for o in trireme_common::Backend::list(&backend, kind).await.unwrap() {
                all.push(format!("{kind:?}/{:?}", o.key));
            }
        }
        all
    });
    assert!(keys.iter().any(|k| k.starts_with("Snapshot/")), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("Pack/")), "{keys:?}");

    let out = agent(d, &url, Some(&profile), &["snapshots", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&id), "{}", text(&out));
}
