using System.Runtime.InteropServices;

namespace Vmm.Vm;

/// <summary>SIGINT and SIGTERM as vmm takes them: the runtime does not end the process; <c>stop</c> is told which
/// signal came (as the VM stop it means, exit code 128+N), and whoever runs the VMs stops them and exits once they
/// are out of KVM_RUN.</summary>
public static class TerminationSignals
{
    /// <summary>Handles both signals until the returned registration is disposed.</summary>
    public static IDisposable Handle(Action<VmStop> stop)
    {
        var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => Take(c, stop, "SIGINT", 2));
        var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => Take(c, stop, "SIGTERM", 15));
        return new Registrations(sigint, sigterm);
    }

    private static void Take(PosixSignalContext context, Action<VmStop> stop, string name, int number)
    {
        context.Cancel = true;
        stop(VmStop.BySignal(name, number));
    }

    private sealed class Registrations(params IDisposable[] all) : IDisposable
    {
        public void Dispose()
        {
            foreach (var registration in all) registration.Dispose();
        }
    }
}
