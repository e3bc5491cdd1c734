fn main() {
    let cli = media_converter::cli::Cli::parse_checked();
    let code = media_converter::run(cli);
    std::process::exit(code.code());
}
