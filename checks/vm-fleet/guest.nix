# What every system the VM fleet check installs has: the test driver's backdoor (so the test can
# talk to the installed system after it reboots; its eth0, usePredictableInterfaceNames = false,
# gets DHCP from serve, NixOS's default) and the QEMU guest drivers.
{modulesPath, ...}: {
  imports = [
    (modulesPath + "/testing/test-instrumentation.nix")
    (modulesPath + "/profiles/qemu-guest.nix")
  ];
  system.stateVersion = "25.11";
}
