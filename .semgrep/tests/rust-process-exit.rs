// Rule test for rust-no-process-exit (semgrep --test). The file stands for library code.
use std::process;

fn load_or_die(path: &str) -> Config {
    match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            // ruleid: rust-no-process-exit
            std::process::exit(2);
        }
    }
}

fn give_up() {
    // ruleid: rust-no-process-exit
    process::exit(1);
    // ruleid: rust-no-process-exit
    process::abort();
}

fn fine() -> Result<Config, ConfigError> {
    // ok: rust-no-process-exit
    let c = Config::load("x")?;
    // ok: rust-no-process-exit
    shutdown.exit_code();
    Ok(c)
}

mod imported {
    use std::process::exit;

    fn stop() {
        // ruleid: rust-no-process-exit
        exit(3);
    }
}
