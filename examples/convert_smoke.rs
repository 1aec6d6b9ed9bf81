fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opts = ggufkit::convert::ConvertOptions {
        outtype: args.get(3).map(|s| s.parse().unwrap()).unwrap_or_default(),
        ..Default::default()
    };
    let w = ggufkit::progress::CollectWarnings::default();
    match ggufkit::convert::convert_dir(&args[1], &args[2], &opts, &w) {
        Ok(s) => println!("{}", serde_json::to_string_pretty(&s).unwrap()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2)
        }
    }
}
