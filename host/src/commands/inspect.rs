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
        println!("component {}", args.component.display());
        println!("digest    sha256:{}", info.digest);
        println!("size      {} bytes", info.size);
        println!("imports   ({})", info.imports.len());
        for i in &info.imports {
            println!("  {i}");
        }
        println!("exports   ({})", info.exports.len());
        for e in &info.exports {
            println!("  {e}");
        }
    }
    Ok(Exit::Success)
}
