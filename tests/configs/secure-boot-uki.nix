# The installer of tests/secure_boot.rs: one machine, Secure Boot with the test's own db key.
# The test generates the key and the certificate in its temp dir and writes a file that imports
# this one and sets bootServer.secureBoot.keyFile and .certificateFile to them; the kernel
# fragment (the test kernel's cache key) does not depend on those paths.
{...}: {
  nfsroot.bootLoader.linuxPnPInterface = "auto";

  bootServer = {
    address = "10.42.0.1";
    secureBoot.enable = true;
  };

  customInstaller.rootDevice = "/dev/vda";
}
