namespace Vmm.Arch;

public enum CpuidRegister { Eax, Ebx, Ecx, Edx }

/// <summary>One feature flag: a bit of one register of a CPUID leaf (function) and subleaf (index).</summary>
public readonly record struct CpuidFeatureBit(uint Function, uint Index, CpuidRegister Register, int Bit)
{
    /// <summary>The name Linux shows in /proc/cpuinfo (or the SDM's, where Linux shows none); null when vmm knows none.</summary>
    public string? Name => CpuidFeatureNames.Of(this);

    public override string ToString()
    {
        string register = Register switch { CpuidRegister.Eax => "EAX", CpuidRegister.Ebx => "EBX", CpuidRegister.Ecx => "ECX", _ => "EDX" };
        string where = $"CPUID 0x{Function:x}.{Index} {register} bit {Bit}";
        return Name is { } name ? $"{name} ({where})" : where;
    }
}
