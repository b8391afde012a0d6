//! `shipshape-alejandra [--check] [PATH...]`: format `.nix` files with the alejandra library.
//!
//! Directories are walked recursively (skipping `.git`, `target` and `result*`); with no PATH the
//! current directory is used, which is what `nix fmt` expects of a flake formatter. `--check` only
//! reports files that are not formatted and exits 1; otherwise files are rewritten in place. A file
//! that does not parse is always an error (exit 2).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use alejandra::format::{Status, in_memory};

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name == ".git" || name == "target" || name.starts_with("result") {
                continue;
            }
            collect(&entry.path(), out)?;
        }
    } else if path.extension().is_some_and(|ext| ext == "nix") {
        out.push(path.to_path_buf());
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut check = false;
    let mut roots = Vec::new();
    for arg in std::env::args_os().skip(1) {
        match arg.to_str() {
            Some("--check") => check = true,
            Some("-h" | "--help") => {
                println!("usage: shipshape-alejandra [--check] [PATH...]");
                return ExitCode::SUCCESS;
            }
            _ => roots.push(PathBuf::from(arg)),
        }
    }
    if roots.is_empty() {
        roots.push(PathBuf::from("."));
    }

    let mut files = Vec::new();
    for root in &roots {
        if let Err(err) = collect(root, &mut files) {
            eprintln!("{}: {err}", root.display());
            return ExitCode::from(2);
        }
    }

    let (mut unformatted, mut errors) = (0, 0);
    for file in &files {
        let shown = file.display().to_string();
        let before = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(err) => {
                eprintln!("{shown}: {err}");
                errors += 1;
                continue;
            }
        };
        match in_memory(shown.clone(), before) {
            (Status::Error(err), _) => {
                eprintln!("{shown}: parse error: {err}");
                errors += 1;
            }
            (Status::Changed(false), _) => {}
            (Status::Changed(true), _) if check => {
                println!("not formatted: {shown}");
                unformatted += 1;
            }
            (Status::Changed(true), after) => {
                if let Err(err) = std::fs::write(file, after) {
                    eprintln!("{shown}: {err}");
                    errors += 1;
                } else {
                    println!("formatted: {shown}");
                }
            }
        }
    }

    println!(
        "alejandra {}: {} file(s), {} {}",
        alejandra::version::VERSION,
        files.len(),
        unformatted,
        if check {
            "not formatted"
        } else {
            "needed formatting"
        },
    );
    if errors > 0 {
        ExitCode::from(2)
    } else if check && unformatted > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
