//! Landlock and capabilities for the spawner thread (Linux only).

use super::{CommandSandbox, DEVICES, Rules, SYSTEM_EXEC, SYSTEM_READ};
use landlock::{
    ABI, Access, AccessFs, BitFlags, LandlockStatus, PathBeneath, PathFd, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
};

/// The newest ABI whose rights this policy was written and tested against; newer
/// kernels enforce these, older ones what they have (best effort, reported as gaps).
const ABI_TARGET: ABI = ABI::V9;

/// Restricts the calling thread (and so every process it forks from now on).
pub(super) fn restrict(rules: &Rules) -> Result<CommandSandbox, String> {
    let kept_capabilities = drop_capabilities();
    let all = AccessFs::from_all(ABI_TARGET);
    let read = AccessFs::from_read(ABI_TARGET);
    let read_only = AccessFs::ReadFile | AccessFs::ReadDir;
    // Devices are written (`> /dev/null` opens with O_TRUNC) and ioctl'd, never run.
    let device: BitFlags<AccessFs> =
        AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev;
    let rule = |p: &std::path::Path, access| {
        PathFd::new(p)
            .map(|fd| PathBeneath::new(fd, access))
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let mut ruleset = landlock::Ruleset::default()
        .handle_access(all)
        .and_then(|r| r.scope(Scope::from_all(ABI_TARGET)))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(SYSTEM_EXEC, read)))
        .and_then(|r| r.add_rules(path_beneath_rules(SYSTEM_READ, read_only)))
        .and_then(|r| r.add_rules(path_beneath_rules(DEVICES, device)))
        .map_err(|e| format!("building the Landlock ruleset: {e}"))?;
    for p in &rules.write {
        ruleset = ruleset
            .add_rule(rule(p, all)?)
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    for p in &rules.read {
        ruleset = ruleset
            .add_rule(rule(p, read)?)
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    let status = ruleset
        .restrict_self()
        .map_err(|e| format!("applying Landlock: {e}"))?;
    let abi = match status.landlock {
        LandlockStatus::Available { effective_abi, .. } => effective_abi,
        LandlockStatus::NotEnabled => {
            return Err(
                "this kernel has Landlock but it is not enabled (add `landlock` to the \
                 lsm= boot parameter)"
                    .into(),
            );
        }
        LandlockStatus::NotImplemented => {
            return Err("this kernel has no Landlock (Linux 5.13 or newer)".into());
        }
    };
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err(format!("Landlock (ABI {}) enforced nothing", abi as u32));
    }
    let mut sandbox = described(abi);
    if let (Some(why), CommandSandbox::Landlock { gaps, partial, .. }) =
        (kept_capabilities, &mut sandbox)
    {
        gaps.push(why);
        *partial = true;
    }
    Ok(sandbox)
}

/// Drops every capability of the calling thread, bounding set included, so commands
/// of an agent running as root get none on exec either: with them, a command could
/// read the agent's memory maps and environment through /proc (CAP_SYS_PTRACE
/// outranks Landlock's ptrace scoping there) or load a kernel module. Returns what is
/// left when that fails.
fn drop_capabilities() -> Option<&'static str> {
    use rustix::thread::{CapabilitySet, CapabilitySets};
    let none = CapabilitySets {
        effective: CapabilitySet::empty(),
        permitted: CapabilitySet::empty(),
        inheritable: CapabilitySet::empty(),
    };
    match rustix::thread::capabilities(None) {
        Ok(now) if now == none => return None,
        Ok(_) => {}
        Err(_) => return Some("commands may keep the agent's capabilities (capget failed)"),
    }
    for cap in 0..64 {
        match rustix::thread::remove_capability_from_bounding_set(CapabilitySet::from_bits_retain(
            1 << cap,
        )) {
            Ok(()) => {}
            // Past the kernel's last capability.
            Err(rustix::io::Errno::INVAL) => break,
            Err(_) => {
                return Some(
                    "commands of this root agent keep capabilities (no CAP_SETPCAP to drop them)",
                );
            }
        }
    }
    match rustix::thread::set_capabilities(None, none) {
        Ok(()) => None,
        Err(_) => Some("commands of this root agent keep capabilities (capset failed)"),
    }
}

/// What an ABI leaves out of this policy.
fn described(abi: ABI) -> CommandSandbox {
    let mut gaps = Vec::new();
    if abi < ABI::V2 {
        gaps.push("files cannot be moved or linked between directories, even inside the root (Linux 5.19)");
    }
    if abi < ABI::V3 {
        gaps.push("truncating a file outside the root is not refused (Linux 6.2)");
    }
    if abi < ABI::V5 {
        gaps.push("ioctl on devices is not restricted (Linux 6.10)");
    }
    if abi < ABI::V6 {
        gaps.push(
            "commands can signal processes outside the sandbox, such as the agent (Linux 6.12)",
        );
    }
    if abi < ABI::V9 {
        gaps.push("connecting to Unix sockets by path outside the root is not refused (Linux 7.1)");
    }
    CommandSandbox::Landlock {
        abi: abi as u32,
        gaps,
        partial: abi < ABI::V3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_abis_are_described_as_partial() {
        let CommandSandbox::Landlock { partial, gaps, .. } = described(ABI::V2) else {
            panic!("landlock")
        };
        assert!(partial);
        assert!(gaps.iter().any(|g| g.contains("truncating")));
        let CommandSandbox::Landlock { partial, gaps, .. } = described(ABI::V9) else {
            panic!("landlock")
        };
        assert!(!partial);
        assert!(gaps.is_empty());
    }
}
