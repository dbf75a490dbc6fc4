//! Test helper: prints the descriptors it was started with (space-separated, sorted)
//! and exits with the code given as its first argument.

fn main() {
    let me = std::process::id();
    let own_dir = format!("/proc/{me}/fd");
    let mut fds: Vec<u32> = std::fs::read_dir("/proc/self/fd")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let fd: u32 = e.file_name().to_str()?.parse().ok()?;
                    // The directory being read is open too; it is not inherited.
                    let target = std::fs::read_link(e.path()).ok()?;
                    (target.to_str() != Some(own_dir.as_str())).then_some(fd)
                })
                .collect()
        })
        .unwrap_or_default();
    fds.sort_unstable();
    let text: Vec<String> = fds.iter().map(u32::to_string).collect();
    println!("{}", text.join(" "));
    let code = std::env::args()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    std::process::exit(code);
}
