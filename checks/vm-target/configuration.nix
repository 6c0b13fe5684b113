# The system the VM check installs: the test driver's backdoor (so the test can talk to the
# installed system after it reboots) and the QEMU guest drivers, and a name to check.
{modulesPath, ...}: {
  imports = [
    (modulesPath + "/testing/test-instrumentation.nix")
    (modulesPath + "/profiles/qemu-guest.nix")
  ];
  networking.hostName = "installed-by-pxe";
  system.stateVersion = "25.05";
}
