//! Who the CLI acts as. Every write is recorded under a name, and whoever
//! started a rollout may not approve it, so the name should be a person's:
//! `--as` (or `SLUICE_USER`), else the login name, else `someone`.

/// The name recorded when nothing better is known.
pub const FALLBACK: &str = "someone";

/// `--as`, else the login name from the environment (`USER`, `LOGNAME`,
/// Windows' `USERNAME`), else the account of this process's user id in
/// `/etc/passwd` (a container often sets no `USER`), else [`FALLBACK`].
pub fn name(given: Option<&str>, var: &dyn Fn(&str) -> Option<String>) -> String {
    let given = given.map(str::to_string).filter(|n| !n.trim().is_empty());
    let from_env = || ["USER", "LOGNAME", "USERNAME"].into_iter().find_map(|k| var(k).filter(|v| !v.trim().is_empty()));
    given.or_else(from_env).or_else(account_of_this_process).unwrap_or_else(|| FALLBACK.to_string())
}

fn account_of_this_process() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    account_for_uid(&passwd, real_uid(&status)?)
}

/// The real user id from `/proc/self/status` (`Uid:` real, effective, saved, fs).
fn real_uid(status: &str) -> Option<u32> {
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.parse().ok()
}

/// The account name of `uid` in `/etc/passwd` text (`name:x:uid:gid:…`).
fn account_for_uid(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?.parse::<u32>().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_given_name_wins_then_the_login_name() {
        let env = |k: &str| match k {
            "LOGNAME" => Some("carol".to_string()),
            "USER" => Some(String::new()),
            _ => None,
        };
        assert_eq!(name(Some("alice"), &env), "alice");
        assert_eq!(name(Some(" "), &env), "carol", "a blank --as is no name");
        assert_eq!(name(None, &env), "carol", "an empty USER is skipped");
        assert_eq!(name(None, &|k| (k == "USERNAME").then(|| "dave".to_string())), "dave");
    }

    #[test]
    fn without_a_login_name_the_account_of_the_user_id_is_read() {
        let status = "Name:\tsluice\nUmask:\t0022\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(real_uid(status), Some(1000));
        let passwd = "root:x:0:0:root:/root:/bin/bash\n# comment\nbroken\nerin:x:1000:1000:Erin,,,:/home/erin:/bin/bash\n";
        assert_eq!(account_for_uid(passwd, 1000).as_deref(), Some("erin"));
        assert_eq!(account_for_uid(passwd, 0).as_deref(), Some("root"));
        assert_eq!(account_for_uid(passwd, 42), None);
        assert_eq!(real_uid("Name:\tx\n"), None);
    }
}
