# A host whose second NIC faces the boot network: GRUB's efinet1, the kernel's eth1, an
# NVMe disk named by a stable id, and a static address for the installed system taken
# from the installer's DHCP lease. Also shows a serial console on ttyS1 (IPMI SOL).
{
  config,
  pkgs,
  ...
}: {
  imports = [./server.nix];

  nfsroot.bootLoader = {
    efinetDHCPInterface = "efinet1";
    linuxPnPInterface = "eth1";
    serial.device = "ttyS1";
    serial.settings = "57600n8";
  };
  nfsroot.extraKernelOptions = ["MLX5_CORE" "NR_CPUS=512"];

  customInstaller.networking.useDHCP = false;
  customInstaller.networking.staticInterfaceFromDHCP = "enp2s0";
  customInstaller.rootDevice = "/dev/disk/by-id/nvme-SAMSUNG_MZVL2512HCJQ_S675NX0T123456";
  customInstaller.swapSizeMiB = 4096;
  customInstaller.target.flake = "/etc/fleet#db1";
}
