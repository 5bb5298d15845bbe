//! `evos inspect`: a component's digest, size, imports and exports, read
//! without compiling it.

use std::path::PathBuf;

use anyhow::Result;

use super::{Exit, print_json, read_input};

#[derive(clap::Args)]
pub struct Args {
    /// The component (.wasm).
    component: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> Result<Exit> {
    let bytes = read_input(&args.component)?;
    let info = evos::inspect::inspect(&bytes, &args.component.display().to_string())?;
    if args.json {
        print_json(&info)?;
    } else {
        say!("component {}", args.component.display());
        say!("digest    sha256:{}", info.digest);
        say!("size      {} bytes", info.size);
        say!("imports   ({})", info.imports.len());
        for i in &info.imports {
            say!("  {i}");
        }
        say!("exports   ({})", info.exports.len());
        for e in &info.exports {
            say!("  {e}");
        }
    }
    Ok(Exit::Success)
}
