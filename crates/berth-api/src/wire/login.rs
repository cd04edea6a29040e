//! How to log in to a machine: the ready `ssh` line the CLI and the dashboard show.

use super::{InstanceView, OpResult};

/// `ssh [-p PORT] [USER@]ADDRESS`: how to log in, ready to paste (no user when the backend did
/// not say which).
pub fn ssh_command(user: Option<&str>, address: &str, port: Option<u16>) -> String {
    let port = port
        .filter(|p| *p != 22)
        .map(|p| format!("-p {p} "))
        .unwrap_or_default();
    let user = user.map(|u| format!("{u}@")).unwrap_or_default();
    format!("ssh {port}{user}{address}")
}

impl InstanceView {
    /// How to log in to it, once it has an address.
    pub fn ssh_command(&self) -> Option<String> {
        let ip = self.ip_address.as_ref().or(self.ipv6_address.as_ref())?;
        Some(ssh_command(self.login_user.as_deref(), ip, self.ssh_port))
    }
}

impl OpResult {
    /// How to log in to the machine a provision made.
    pub fn ssh_command(&self) -> Option<String> {
        let ip = self.ip_address.as_ref().or(self.ipv6_address.as_ref())?;
        Some(ssh_command(self.login_user.as_deref(), ip, self.ssh_port))
    }
}
