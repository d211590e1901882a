//! Writes `report.html` into each run output directory given as an argument:
//! `cargo run -p fika-report --example render_report -- DIR...`.

fn main() {
    for dir in std::env::args().skip(1) {
        match fika_report::write_report(std::path::Path::new(&dir)) {
            Ok(p) => println!("{}", p.display()),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
    }
}
