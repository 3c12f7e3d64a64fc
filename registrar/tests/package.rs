//! The Debian package: `ci/build-deb.sh` builds it (here from the binary under test) with the
//! files, conffiles, maintainer scripts and control fields of `[package.metadata.deb]` in
//! `registrar/Cargo.toml`, which cargo-deb reads; what it installs works together: the unit starts
//! the installed binary on the installed configuration file, which loads over every profile, with
//! the examples it offers too. Needs `dpkg-deb` (Debian's `dpkg`), binutils and gzip. `.ci/run`
//! also installs a release build's package with `dpkg -i` and checks the installed unit with
//! `systemd-analyze verify`.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rserpool_registrar::config::{self, Config, Overrides};

/// The repository's top directory.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs `command`, which must succeed; `what` names it in the failure.
fn run(command: &mut Command, what: &str) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what} does not run: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `[package.metadata.deb]` of the registrar's manifest.
fn deb_metadata() -> toml::Table {
    let manifest: toml::Table = read("registrar/Cargo.toml").parse().unwrap();
    manifest["package"]["metadata"]["deb"]
        .as_table()
        .expect("registrar/Cargo.toml has [package.metadata.deb]")
        .clone()
}

/// The files the assets install, as (path without the leading `/`, octal mode), and their
/// sources: cargo-deb's rule that a destination ending in `/` is a directory.
fn assets() -> Vec<(String, String, String)> {
    deb_metadata()["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|asset| {
            let fields: Vec<&str> = asset
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap())
                .collect();
            let [source, dest, mode] = fields[..] else {
                panic!("an asset is [source, dest, mode]: {asset}");
            };
            let dest = match dest.strip_suffix('/') {
                Some(dir) => format!("{dir}/{}", source.rsplit('/').next().unwrap()),
                None => dest.to_owned(),
            };
            (source.to_owned(), dest, mode.to_owned())
        })
        .collect()
}

/// Where the asset from `source` is installed, with a leading `/`.
fn installed_path(source: &str) -> String {
    let (_, dest, _) = assets()
        .into_iter()
        .find(|(s, _, _)| s == source)
        .unwrap_or_else(|| panic!("no asset from {source}"));
    format!("/{dest}")
}

fn key<'a>(table: &'a toml::Table, name: &str) -> &'a str {
    table[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} is a string"))
}

/// The value of the `name=` line of a systemd unit.
fn unit_setting<'a>(unit: &'a str, name: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("the unit has no {name}="))
}

/// `rwxr-xr-x` as `755`.
fn octal(permissions: &str) -> String {
    permissions
        .as_bytes()
        .chunks(3)
        .map(|c| {
            let bit = |i: usize, v: u8| if c[i] == b'-' { 0 } else { v };
            char::from(b'0' + bit(0, 4) + bit(1, 2) + bit(2, 1))
        })
        .collect()
}

#[test]
fn the_deb_holds_the_files_scripts_and_fields_of_the_cargo_deb_metadata() {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = run(
        Command::new("bash")
            .arg(repo().join("ci/build-deb.sh"))
            .arg("--binary")
            .arg(env!("CARGO_BIN_EXE_rserpool-registrar"))
            .arg("--out")
            .arg(&dir),
        "ci/build-deb.sh (needs dpkg-deb, binutils, gzip)",
    );
    let deb = PathBuf::from(stdout(&out).lines().last().expect("the .deb's path").trim());
    let arch = stdout(&run(
        Command::new("dpkg").arg("--print-architecture"),
        "dpkg",
    ));
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        deb.file_name().unwrap().to_str().unwrap(),
        format!("rserpool-registrar_{version}-1_{}.deb", arch.trim())
    );

    // The files and their modes are the assets'.
    let listing = stdout(&run(
        Command::new("dpkg-deb").arg("--contents").arg(&deb),
        "dpkg-deb --contents",
    ));
    let files: BTreeSet<(String, String)> = listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let path = fields[5].strip_prefix("./").unwrap().to_owned();
            (path, octal(&fields[0][1..]))
        })
        .collect();
    let expected: BTreeSet<(String, String)> = assets()
        .into_iter()
        .map(|(_, dest, mode)| (dest, mode))
        .collect();
    assert_eq!(files, expected, "{listing}");
    assert!(
        listing
            .lines()
            .all(|l| l.split_whitespace().nth(1) == Some("root/root")),
        "{listing}"
    );

    // Control: the fields, the conffiles (everything in /etc, as cargo-deb marks them) and the
    // maintainer scripts.
    let control_dir = dir.join("control");
    run(
        Command::new("dpkg-deb")
            .arg("-e")
            .arg(&deb)
            .arg(&control_dir),
        "dpkg-deb -e",
    );
    let control = std::fs::read_to_string(control_dir.join("control")).unwrap();
    let meta = deb_metadata();
    for line in [
        "Package: rserpool-registrar".to_owned(),
        format!("Version: {version}-1"),
        format!("Maintainer: {}", key(&meta, "maintainer")),
        format!("Section: {}", key(&meta, "section")),
        format!("Priority: {}", key(&meta, "priority")),
        format!("Description: {}", env!("CARGO_PKG_DESCRIPTION")),
        "Depends: libc6 (>= 2.".to_owned(),
    ] {
        assert!(
            control.lines().any(|l| l.starts_with(&line)),
            "no {line:?} in\n{control}"
        );
    }
    let extended: Vec<&str> = control
        .lines()
        .skip_while(|l| !l.starts_with("Description: "))
        .skip(1)
        .map(str::trim)
        .collect();
    assert_eq!(extended.join(" "), key(&meta, "extended-description"));
    let conffiles = std::fs::read_to_string(control_dir.join("conffiles")).unwrap();
    let etc: BTreeSet<String> = expected
        .iter()
        .filter(|(p, _)| p.starts_with("etc/"))
        .map(|(p, _)| format!("/{p}"))
        .collect();
    assert!(etc.contains("/etc/rserpool/registrar.toml"), "{etc:?}");
    assert_eq!(
        conffiles
            .lines()
            .map(str::to_owned)
            .collect::<BTreeSet<_>>(),
        etc
    );
    let scripts = repo()
        .join("registrar")
        .join(key(&meta, "maintainer-scripts"));
    for script in ["postinst", "prerm", "postrm"] {
        let packaged = control_dir.join(script);
        assert_eq!(
            std::fs::read(&packaged).unwrap(),
            std::fs::read(scripts.join(script)).unwrap(),
            "{script}"
        );
        let mode = std::fs::metadata(&packaged).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "{script}");
        run(Command::new("sh").arg("-n").arg(&packaged), script);
    }

    // What it installs: the binary runs, the man page and completions are its own, the
    // configuration file loads.
    let root = dir.join("root");
    run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
        "dpkg-deb -x",
    );
    let binary = root.join("usr/bin/rserpool-registrar");
    let out = run(
        Command::new(&binary).arg("--version"),
        "the packaged binary",
    );
    assert_eq!(stdout(&out), format!("rserpool-registrar {version}\n"));
    let man = run(
        Command::new("gzip")
            .arg("-dc")
            .arg(root.join("usr/share/man/man8/rserpool-registrar.8.gz")),
        "gzip -dc",
    );
    let man = stdout(&man);
    assert!(man.contains(".TH rserpool-registrar 8"), "{man}");
    assert!(man.contains("check\\-config"), "{man}");
    for completion in [
        "usr/share/bash-completion/completions/rserpool-registrar",
        "usr/share/zsh/vendor-completions/_rserpool-registrar",
        "usr/share/fish/vendor_completions.d/rserpool-registrar.fish",
    ] {
        let text = std::fs::read_to_string(root.join(completion)).unwrap();
        assert!(
            text.contains("check-config") && text.contains("rserpool-registrar"),
            "{completion}: {text}"
        );
    }
    for profile in config::profile_names() {
        let out = run(
            Command::new(&binary)
                .args(["--profile", profile, "--check-config", "--config"])
                .arg(root.join("etc/rserpool/registrar.toml")),
            "--check-config with the packaged configuration file",
        );
        assert!(
            stdout(&out).contains(&format!("# Layers: profile `{profile}`, then file ")),
            "{}",
            stdout(&out)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_unit_starts_the_installed_binary_on_the_installed_configuration() {
    let unit = read("deploy/systemd/rserpool-registrar.service");
    assert_eq!(
        installed_path("../deploy/systemd/rserpool-registrar.service"),
        "/lib/systemd/system/rserpool-registrar.service"
    );
    let exec: Vec<&str> = unit_setting(&unit, "ExecStart").split(' ').collect();
    assert_eq!(
        exec[0],
        installed_path("target/release/rserpool-registrar"),
        "{exec:?}"
    );
    let config_file = installed_path("../deploy/debian/registrar.toml");
    assert_eq!(config_file, "/etc/rserpool/registrar.toml");
    assert!(
        exec.windows(2)
            .any(|w| w == ["--config", config_file.as_str()]),
        "{exec:?}"
    );
    assert!(
        exec.windows(2)
            .any(|w| w == ["--profile", "${RSERPOOL_PROFILE}"]),
        "{exec:?}"
    );
    let profile = unit_setting(&unit, "Environment")
        .strip_prefix("RSERPOOL_PROFILE=")
        .unwrap();
    assert!(config::profile_names().contains(&profile), "{profile}");
    let environment = installed_path("../deploy/debian/rserpool-registrar.default");
    assert_eq!(
        unit_setting(&unit, "EnvironmentFile"),
        format!("-{environment}")
    );
    // The environment file's examples name a profile and flags the binary takes.
    let defaults = read("deploy/debian/rserpool-registrar.default");
    let example = |name: &str| {
        defaults
            .lines()
            .find_map(|l| l.strip_prefix(&format!("#{name}=")))
            .unwrap_or_else(|| panic!("no #{name}= example"))
            .trim_matches('"')
            .to_owned()
    };
    assert!(config::profile_names().contains(&example("RSERPOOL_PROFILE").as_str()));
    let args = example("RSERPOOL_ARGS");
    let out = run(
        Command::new(env!("CARGO_BIN_EXE_rserpool-registrar"))
            .args(args.split(' '))
            .arg("--check-config"),
        "RSERPOOL_ARGS's example",
    );
    assert!(stdout(&out).contains("# from --id"), "{}", stdout(&out));
}

#[test]
fn the_shipped_configuration_file_and_its_examples_load_over_every_profile() {
    let shipped = read("deploy/debian/registrar.toml");
    // The examples: commented-out sections and keys.
    let mut examples = 0;
    let uncommented: String = shipped
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(setting) if setting.starts_with('[') || setting.split(' ').nth(1) == Some("=") => {
                examples += 1;
                format!("{setting}\n")
            }
            _ => format!("{l}\n"),
        })
        .collect();
    assert!(examples >= 10, "{examples} example lines:\n{uncommented}");
    let path = Path::new("/etc/rserpool/registrar.toml");
    for profile in config::profile_names() {
        let plain = Config::from_layers(profile, None, &Overrides::default()).unwrap();
        let shipped_config =
            Config::from_layers(profile, Some((path, &shipped)), &Overrides::default())
                .unwrap_or_else(|e| panic!("{profile}: {e}"));
        assert_eq!(shipped_config, plain, "as shipped it sets nothing");
        let with_examples =
            Config::from_layers(profile, Some((path, &uncommented)), &Overrides::default())
                .unwrap_or_else(|e| panic!("{profile}, examples uncommented: {e}\n{uncommented}"));
        assert_ne!(with_examples, plain, "{profile}");
        assert!(with_examples.registrar.id.is_some(), "{profile}");
        assert!(!with_examples.enrp.peers.is_empty(), "{profile}");
    }
}
