fn main() -> std::process::ExitCode {
    nixos_pxe_installer::cli::main()
}
