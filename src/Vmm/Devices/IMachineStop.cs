namespace Vmm.Devices;

/// <summary>What a device may ask of the machine it is part of: to end the VM as the guest asked, through
/// the reset line or the exit port. The first request to stop the VM wins.</summary>
public interface IMachineStop
{
    void RequestGuestReset(string how);
    void RequestGuestExit(uint exitPortValue);
}
