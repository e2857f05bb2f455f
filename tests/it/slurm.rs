//! A real Slurm cluster: Debian's slurm-wlm (installed by scripts/test.sh), started here as
//! a single-node cluster (munged, slurmctld and slurmd on localhost), runs the job array
//! that `runner sweep --emit slurm` writes. Skipped, saying so, only where slurm-wlm is not
//! installed or the test is not root (slurmd runs jobs as root here).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{runner, shapes, stderr, stdout, tiny_spec};

/// The daemons of a one-node cluster configured in `dir`; stopped when dropped.
struct Cluster {
    conf: PathBuf,
    daemons: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Cluster {
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    fn run(&self, program: &str, args: &[&str], cwd: &Path) -> Output {
        self.command(program).args(args).current_dir(cwd).output().unwrap()
    }

    /// munged (the system's socket, started if it does not answer), then slurmctld and
    /// slurmd in the foreground on free ports, until the node is idle.
    fn start(dir: &Path) -> Cluster {
        let munge_ok = || Command::new("munge").arg("-n").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
        if !munge_ok() {
            std::fs::create_dir_all("/run/munge").unwrap();
            let o = Command::new("chown").args(["munge:munge", "/run/munge"]).output().unwrap();
            assert!(o.status.success(), "chown /run/munge: {}", String::from_utf8_lossy(&o.stderr));
            let o = Command::new("runuser").args(["-u", "munge", "--", "/usr/sbin/munged"]).output().unwrap();
            assert!(o.status.success(), "munged: {}", String::from_utf8_lossy(&o.stderr));
            let start = Instant::now();
            while !munge_ok() {
                assert!(start.elapsed() < Duration::from_secs(10), "munged does not answer");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
        let d = dir.display();
        for sub in ["state", "spool"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let conf = dir.join("slurm.conf");
        std::fs::write(
            &conf,
            format!(
                "ClusterName=runnertest\nSlurmctldHost={host}\nSlurmUser=root\nSlurmdUser=root\n\
                 AuthType=auth/munge\nCryptoType=crypto/munge\nStateSaveLocation={d}/state\n\
                 SlurmdSpoolDir={d}/spool\nSlurmctldPidFile={d}/slurmctld.pid\nSlurmdPidFile={d}/slurmd.pid\n\
                 SlurmctldPort={}\nSlurmdPort={}\nProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n\
                 SchedulerType=sched/backfill\nSelectType=select/cons_tres\nSelectTypeParameters=CR_Core\n\
                 ReturnToService=2\nMpiDefault=none\nJobCompType=jobcomp/none\n\
                 AccountingStorageType=accounting_storage/none\nJobAcctGatherType=jobacct_gather/none\n\
                 SlurmctldLogFile={d}/slurmctld.log\nSlurmdLogFile={d}/slurmd.log\n\
                 NodeName={host} CPUs=2 State=UNKNOWN\n\
                 PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP\n",
                free_port(),
                free_port()
            ),
        )
        .unwrap();
        let mut cluster = Cluster { conf, daemons: vec![] };
        for daemon in ["/usr/sbin/slurmctld", "/usr/sbin/slurmd"] {
            let child = cluster
                .command(daemon)
                .args(["-D", "-f"])
                .arg(&cluster.conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            cluster.daemons.push(child);
        }
        let start = Instant::now();
        loop {
            let o = cluster.run("sinfo", &["-h", "-o", "%T"], dir);
            if stdout(&o).trim() == "idle" {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the node never became idle: {}{}\n{}",
                stdout(&o),
                stderr(&o),
                std::fs::read_to_string(dir.join("slurmctld.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        cluster
    }
}

#[test]
fn a_real_slurm_cluster_runs_the_emitted_job_array_and_every_run_completes_once() {
    if !Path::new("/usr/sbin/slurmctld").exists() || !Path::new("/usr/sbin/munged").exists() {
        println!("SKIPPED: slurm-wlm and munge are not installed (scripts/test.sh installs them with apt-get)");
        return;
    }
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: the single-node cluster runs its daemons as root; run the tests as root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let cluster = Cluster::start(&root.join("slurm"));
    let data = shapes(root, 2, 4);
    std::fs::create_dir_all(root.join("specs")).unwrap();
    let spec = tiny_spec(&data).replace("name = \"tiny\"", "name = \"cluster\"") + "\n[grid]\nseed = [1, 2, 3, 4]\n";
    std::fs::write(root.join("specs/cluster.toml"), spec).unwrap();

    let o = runner(root, &["sweep", "specs", "--out", "runs", "--emit", "slurm", "--workers", "2", "--gpus", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(root.join("job.sbatch"), stdout(&o)).unwrap();
    let o = cluster
        .command("sbatch")
        .args(["--parsable", "job.sbatch"])
        .current_dir(root)
        .env("RUNNER_THREADS", "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "sbatch: {}", stderr(&o));
    let job = stdout(&o).trim().to_string();
    println!("sbatch: submitted job {job} (array 0-1)");

    // Until the array leaves the queue; the states of its tasks as the controller reports them.
    let start = Instant::now();
    loop {
        let o = cluster.run("squeue", &["-h", "-j", &job], root);
        if stdout(&o).trim().is_empty() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "the job is still queued: {}", stdout(&o));
        std::thread::sleep(Duration::from_millis(500));
    }
    let o = cluster.run("scontrol", &["show", "job", &job, "-o"], root);
    let states: Vec<String> = stdout(&o)
        .lines()
        .map(|l| {
            let field = |k: &str| l.split(' ').find_map(|f| f.strip_prefix(k)).unwrap_or("?").to_string();
            format!("{}_{} {}", field("ArrayJobId="), field("ArrayTaskId="), field("JobState="))
        })
        .collect();
    println!("scontrol: {}", states.join(", "));
    assert_eq!(states.len(), 2, "{}", stdout(&o));
    assert!(states.iter().all(|s| s.ends_with(" COMPLETED")), "{states:?}");

    // Each task ran its shard: together every run, each completed once.
    let mut completed_by_tasks = vec![];
    for task in 0..2 {
        let log = std::fs::read_to_string(root.join(format!("runner-sweep-{job}_{task}.log")))
            .or_else(|_| {
                let name = std::fs::read_dir(root)
                    .unwrap()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .find(|n| n.ends_with(&format!("-{job}_{task}.log")))
                    .expect("a log per task");
                std::fs::read_to_string(root.join(name))
            })
            .unwrap();
        let ids: Vec<String> = log
            .lines()
            .filter(|l| l.split_whitespace().nth(2) == Some("completed"))
            .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
            .collect();
        println!("task {task}: completed {ids:?}");
        completed_by_tasks.extend(ids);
    }
    let runs: Vec<PathBuf> = std::fs::read_dir(root.join("runs/cluster"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(runs.len(), 4, "{runs:?}");
    completed_by_tasks.sort();
    let mut ids: Vec<String> = runs.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    ids.sort();
    assert_eq!(completed_by_tasks, ids, "every run completed by exactly one task");
    for run in &runs {
        let log = std::fs::read_to_string(run.join("run.log")).unwrap();
        assert_eq!(log.matches("completed in").count(), 1, "{log}");
        assert_eq!(crate::common::summary_json(run)["status"], "completed");
    }
    let o = runner(root, &["report", "--runs", "runs", "--out", "report"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = std::fs::read_to_string(root.join("report/summary.csv")).unwrap();
    for id in &ids {
        assert!(csv.contains(id.as_str()), "the report lists {id}: {csv}");
    }
    println!("runner report: {} runs", csv.lines().count() - 1);
}
