# The boot server of the second example's site: a name for option 66 resolved by DNS,
# clients on a /16 as in the seed's export.
{
  bootServer = {
    address = "130.59.10.5";
    name = "boot.example.org";
    interface = "eno2";
    subnet = "130.59.0.0/16";
    dhcpRange = {
      start = "130.59.200.10";
      end = "130.59.200.250";
    };
    router = "130.59.0.1";
    nameServers = ["130.59.1.1" "130.59.1.2"];
    domainName = "example.org";
    leaseSeconds = 600;
  };
}
