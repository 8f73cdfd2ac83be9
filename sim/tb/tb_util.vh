// Shared testbench helpers (included inside a module). Golden .hex words are the W-bit two's complement
// patterns of the elements (docs/golden_format.md); sx64 widens one to 64 bits.
reg [8*1024-1:0] fname;
integer n_checked;
integer n_bad;

function signed [63:0] sx64(input [63:0] raw, input integer w, input integer sgn);
    begin
        if (sgn != 0 && w < 64 && raw[w-1])
            sx64 = raw | (~64'd0 << w);
        else
            sx64 = raw;
    end
endfunction

task report_and_exit(input [8*32-1:0] unit);
    begin
        $display("RESULT unit=%0s checked=%0d mismatches=%0d", unit, n_checked, n_bad);
        if (n_bad != 0 || n_checked == 0)
            $fatal(1, "%0s: %0d of %0d elements differ from the golden file", unit, n_bad, n_checked);
        $finish;
    end
endtask
