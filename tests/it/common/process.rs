//! Process control shared by the black-box tests: finding a peer's binary, a free loopback
//! port, the one `kill(2)` wrapper, and [`Peer`], the guard every spawned peer runs in.

use std::{
    net::{TcpListener, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Sends `sig` to the process `pid`, or to the process group `-pid` when `pid` is negative,
/// as kill(2) does. The only `unsafe` in the tests: callers pass the PID of a child they
/// spawned and have not reaped (or its process group), so no stranger is signalled.
pub(crate) fn kill(pid: libc::pid_t, sig: libc::c_int) -> std::io::Result<()> {
    // SAFETY: kill(2) reads no memory of ours: it takes two integers and returns one. A
    // PID reused by another process is ruled out by the callers (see above).
    let rc = unsafe { libc::kill(pid, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Finds a binary on PATH or in the sbin directories; panics naming the Debian package.
pub(crate) fn require(bin: &str, package: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{bin}` not found: these tests need it (apt-get install -y {package})")
        })
}

/// A loopback port free for both UDP and TCP right now.
pub(crate) fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port for UDP and TCP");
}

/// A child process stopped on drop: SIGTERM to its process group, then SIGKILL if it has
/// not exited within 3 s.
pub(crate) struct Peer {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Peer {
    pub(crate) fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Self {
        use std::os::unix::process::CommandExt as _;
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            // Its own process group, so kamailio's worker children are stopped with it.
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    /// What the peer is (for assertion messages).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The peer's output so far (for assertion messages).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The PID of the process (the leader of its process group), while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Freezes the peer (SIGSTOP to its process group): its sockets stay open, so the
    /// kernel still completes TCP handshakes and queues datagrams, but nothing answers.
    pub(crate) fn pause(&mut self) {
        if let Some(c) = &self.child {
            Self::signal_group(c.id(), libc::SIGSTOP);
        }
    }

    /// Thaws a peer frozen by [`Peer::pause`] (SIGCONT to its process group).
    pub(crate) fn resume(&mut self) {
        if let Some(c) = &self.child {
            Self::signal_group(c.id(), libc::SIGCONT);
        }
    }

    /// Signals the process group this guard created (its id is the leader's PID, which
    /// this guard has not reaped yet or has just reaped). A group that is gone is no error.
    fn signal_group(pid: u32, sig: libc::c_int) {
        let _ = kill(-(pid as libc::pid_t), sig);
    }

    /// Kills the peer hard (SIGKILL to its process group) and reaps it.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            Self::signal_group(c.id(), libc::SIGKILL);
            let _ = c.wait();
        }
    }

    /// Stops the peer (SIGTERM to its group, SIGKILL after 3 s or to any worker left)
    /// and reaps it.
    pub(crate) fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        Self::signal_group(c.id(), libc::SIGTERM);
        // A paused peer acts on SIGTERM only once it runs again.
        Self::signal_group(c.id(), libc::SIGCONT);
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Self::signal_group(c.id(), libc::SIGKILL);
        let _ = c.wait();
    }

    /// True if the peer has exited.
    pub(crate) fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Panics with the peer's log if it has exited.
    pub(crate) fn assert_running(&mut self) {
        if let Some(c) = &mut self.child
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!("{} exited ({status}):\n{}", self.name, self.log());
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
    }
}
