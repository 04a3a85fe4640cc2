//! The command line.

use std::path::PathBuf;

use ipnet::Ipv4Net;

/// Usage text.
pub const USAGE: &str = "usage: lb-pod-runner --kubeconfig FILE [--node NAME] [--zone ZONE] \
--pod-cidr CIDR [--netns NAME] --echo PATH [--image-bin SUBSTRING=PATH]... --log-dir DIR \
[--ready-file FILE]";

/// A container image that runs a given binary instead of the echo server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBin {
    /// Chosen when the image name contains this.
    pub substring: String,
    /// The program to run.
    pub path: PathBuf,
}

/// Parsed command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// Kubeconfig of the cluster (its current context is used).
    pub kubeconfig: PathBuf,
    /// Name of the Node to register.
    pub node: String,
    /// Its `topology.kubernetes.io/zone` label.
    pub zone: String,
    /// Pod IPs come from here: a loopback range, or any range local inside `netns`.
    pub pod_cidr: Ipv4Net,
    /// The network namespace (`ip netns` name) the pods' processes run in.
    pub netns: Option<String>,
    /// The echo server run for every TCP container port by default.
    pub echo: PathBuf,
    /// Images that run another binary, first match wins.
    pub image_bins: Vec<ImageBin>,
    /// Where each container's stdout and stderr go.
    pub log_dir: PathBuf,
    /// Written (with the node name) once the node is registered and the watches synced.
    pub ready_file: Option<PathBuf>,
}

/// Parses the arguments (without the program name). `Err("")` asks for the usage text.
pub fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut kubeconfig = None;
    let mut node = "lb-node".to_owned();
    let mut zone = "zone-a".to_owned();
    let mut pod_cidr: Option<Ipv4Net> = None;
    let mut echo = None;
    let mut image_bins = Vec::new();
    let mut log_dir = None;
    let mut ready_file = None;
    let mut netns = None;
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg, None),
        };
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let Some(value) = inline.or_else(|| args.next()) else {
            return Err(format!("{flag} needs a value"));
        };
        match flag.as_str() {
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(value)),
            "--node" => node = value,
            "--zone" => zone = value,
            "--pod-cidr" => {
                let net: Ipv4Net = value
                    .parse()
                    .map_err(|e| format!("--pod-cidr {value}: {e}"))?;
                if net.prefix_len() > 30 {
                    return Err(format!("--pod-cidr {value}: too small"));
                }
                pod_cidr = Some(net.trunc());
            }
            "--netns" => {
                if value.is_empty() || value.contains('/') {
                    return Err(format!("--netns {value}: expected an `ip netns` name"));
                }
                netns = Some(value);
            }
            "--echo" => echo = Some(PathBuf::from(value)),
            "--image-bin" => {
                let Some((substring, path)) = value.split_once('=') else {
                    return Err(format!("--image-bin {value}: expected SUBSTRING=PATH"));
                };
                if substring.is_empty() || path.is_empty() {
                    return Err(format!("--image-bin {value}: expected SUBSTRING=PATH"));
                }
                image_bins.push(ImageBin {
                    substring: substring.to_owned(),
                    path: PathBuf::from(path),
                });
            }
            "--log-dir" => log_dir = Some(PathBuf::from(value)),
            "--ready-file" => ready_file = Some(PathBuf::from(value)),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if node.is_empty() {
        return Err("--node must not be empty".into());
    }
    // Without a network namespace the pods' addresses must be local here: loopback.
    if let Some(net) = pod_cidr
        && netns.is_none()
        && !(net.network().is_loopback() && net.prefix_len() >= 8)
    {
        return Err(format!(
            "--pod-cidr {net}: must lie within 127.0.0.0/8 unless --netns is given"
        ));
    }
    Ok(Options {
        kubeconfig: kubeconfig.ok_or("--kubeconfig is required")?,
        node,
        zone,
        pod_cidr: pod_cidr.ok_or("--pod-cidr is required")?,
        netns,
        echo: echo.ok_or("--echo is required")?,
        image_bins,
        log_dir: log_dir.ok_or("--log-dir is required")?,
        ready_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Options, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn full_command_line() {
        let opts = parse_strs(&[
            "--kubeconfig",
            "/d/admin.kubeconfig",
            "--node",
            "n1",
            "--zone=zone-b",
            "--pod-cidr",
            "127.77.0.0/16",
            "--echo",
            "/bin/lb-echo",
            "--image-bin",
            "grpc=/bin/grpc-echo",
            "--image-bin=ws=/bin/ws",
            "--log-dir",
            "/d/pods",
            "--ready-file",
            "/d/ready",
        ])
        .unwrap();
        assert_eq!(opts.node, "n1");
        assert_eq!(opts.zone, "zone-b");
        assert_eq!(opts.pod_cidr.to_string(), "127.77.0.0/16");
        assert_eq!(
            opts.image_bins,
            [
                ImageBin {
                    substring: "grpc".into(),
                    path: "/bin/grpc-echo".into()
                },
                ImageBin {
                    substring: "ws".into(),
                    path: "/bin/ws".into()
                }
            ]
        );
        assert_eq!(opts.ready_file.as_deref(), Some("/d/ready".as_ref()));
        assert_eq!(opts.netns, None);
    }

    #[test]
    fn netns_allows_any_ipv4_range() {
        let opts = parse_strs(&[
            "--kubeconfig",
            "k",
            "--pod-cidr",
            "10.117.0.0/16",
            "--netns",
            "lbpods-1",
            "--echo",
            "e",
            "--log-dir",
            "l",
        ])
        .unwrap();
        assert_eq!(opts.netns.as_deref(), Some("lbpods-1"));
        assert_eq!(opts.pod_cidr.to_string(), "10.117.0.0/16");
        assert!(
            parse_strs(&[
                "--kubeconfig",
                "k",
                "--pod-cidr",
                "10.117.0.0/16",
                "--echo",
                "e",
                "--log-dir",
                "l",
            ])
            .unwrap_err()
            .contains("--netns")
        );
    }

    #[test]
    fn defaults_and_errors() {
        let base = [
            "--kubeconfig",
            "k",
            "--pod-cidr",
            "127.77.1.9/24",
            "--echo",
            "e",
            "--log-dir",
            "l",
        ];
        let opts = parse_strs(&base).unwrap();
        assert_eq!(opts.node, "lb-node");
        assert_eq!(opts.zone, "zone-a");
        assert_eq!(opts.pod_cidr.to_string(), "127.77.1.0/24");
        assert!(opts.ready_file.is_none());
        assert!(parse_strs(&base[2..]).is_err());
        let mut bad = base.to_vec();
        bad[3] = "10.0.0.0/16";
        assert!(parse_strs(&bad).unwrap_err().contains("127.0.0.0/8"));
        bad[3] = "127.0.0.0/31";
        assert!(parse_strs(&bad).is_err());
        let mut bad = base.to_vec();
        bad.extend(["--image-bin", "nopath"]);
        assert!(parse_strs(&bad).is_err());
        assert!(parse_strs(&["--bogus", "x"]).is_err());
        assert_eq!(parse_strs(&["--help"]).unwrap_err(), "");
    }
}
