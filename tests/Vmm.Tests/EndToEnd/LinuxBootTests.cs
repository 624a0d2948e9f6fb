using System.Globalization;
using System.Text.RegularExpressions;
using Vmm.Vm;
using Xunit;
using Xunit.Abstractions;

namespace Vmm.Tests.EndToEnd;

/// <summary>Boots the guest-images kernel with the real `vmm run`, as bzImage and as ELF vmlinux, to its user
/// space: the kernel finds the 16550A UART and the i8042 and runs /init, whose marker, boot-timer mark and exit code
/// 33 through the exit port prove that guest programs run and reach the VMM's ports. The same holds on hardware KVM
/// and on the nested kvm_pvm backend, where the test kernel finishes the system calls that backend leaves half
/// done (guest-images/patches).</summary>
[Trait("Category", "LinuxBoot")]
[Collection(LinuxGuests.Collection)]
public sealed partial class LinuxBootTests(ITestOutputHelper output)
{
    private const string InitMarker = "VMM-GUEST-INIT-OK";
    private const string KernelRunsInit = "Run /init as init process";
    private static readonly TimeSpan BootTimeout = TimeSpan.FromMinutes(20);

    [Fact]
    public void BzImage_BootsToInit() => BootToInit(GuestImages.BzImage);

    [Fact]
    public void ElfVmlinux_BootsToInit() => BootToInit(GuestImages.Vmlinux);

    [Fact]
    public void TwoVcpus_TheKernelBringsUpBothFromTheMpTable()
    {
        var result = BootToInit(GuestImages.Vmlinux, cpus: 2);

        Assert.Contains("smp: Brought up 1 node, 2 CPUs", result.Console);
        Assert.Contains("IOAPIC[0]: apic_id 2", result.Console);
    }

    private VmmProcess.Result BootToInit(string kernel, int cpus = 1)
    {
        var result = VmmProcess.Run(
            ["run", "--kernel", kernel, "--initrd", GuestImages.Initramfs, "--memory", "256M", "--cpus", cpus.ToString(),
             "--cmdline", MachineConfig.DefaultCommandLine + " loglevel=7"],
            BootTimeout, markers: [KernelRunsInit, InitMarker]);

        string initLine = result.Console.Split('\n').FirstOrDefault(l => l.Contains(KernelRunsInit)) ?? "";
        output.WriteLine($"kernel {Path.GetFileName(kernel)}: vmm exit code {result.ExitCode} after {result.Elapsed.TotalSeconds:F1} s wall");
        output.WriteLine($"console line: {initLine.Trim()}");
        foreach (var (marker, at) in result.MarkerSeenAt)
            output.WriteLine($"'{marker}' reached the console {at.TotalSeconds:F1} s after vmm started (wall clock)");
        output.WriteLine("vmm log:\n" + result.Log);

        Assert.Contains("ttyS0 at I/O 0x3f8 (irq = 4, base_baud = 115200) is a 16550A", result.Console);
        Assert.Contains("serio: i8042 KBD port at 0x60,0x64 irq 1", result.Console);
        Assert.Contains(KernelRunsInit, result.Console);
        if (ConsoleTimestamp().Match(initLine) is { Success: true } m)
            output.WriteLine($"guest clock at 'Run /init': {double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture):F2} s");

        bool nested = NestedKvm.IsActiveOnThisHost();
        output.WriteLine("evidence asserted: init's marker, its boot-timer mark and exit code 33 through the exit port" +
                         (nested ? " (nested kvm_pvm: user space through the test kernel's patch), and the kernel keeping time " +
                                   "by the TSC whose frequency vmm told it" : ""));
        if (nested)
        {
            // Told the TSC's frequency (tsc_early_khz), the kernel need not calibrate it, which it cannot do here.
            Assert.Contains("tsc_early_khz=", result.Log);
            Assert.Contains("clocksource: Switched to clocksource tsc", result.Console);
            Assert.DoesNotContain("Marking TSC unstable", result.Console);
        }
        Assert.Contains(InitMarker, result.Console);
        Assert.Contains("boot timer: guest mark 1 at", result.Log);
        Assert.Equal(ExitCodes.FromExitPort(0x10), result.ExitCode);
        return result;
    }

    [GeneratedRegex(@"^\[\s*(\d+\.\d+)\]")]
    private static partial Regex ConsoleTimestamp();
}
