// Replays a golden `requantize` op through rq_requant: every element of the op's input file, the
// per-channel multiplier / shift / offset constant files and the expected output file, all loaded with
// $readmemh from the golden set. Parameters come from the manifest (repq_hw/golden/rtl.py).
// Plusargs: +in= +mult= +shift= [+offset=] +out=
`timescale 1ns/1ps
module tb_requant;
    parameter integer N_ELEM  = 1;        // images x elements per image
    parameter integer C       = 1;        // channels (last axis)
    parameter integer NC      = 1;        // length of the constant vectors (1 or C)
    parameter integer IN_W    = 32, IN_S = 1;
    parameter integer OUT_W   = 8,  OUT_S = 0;
    parameter integer M_W     = 32, M_S = 1;
    parameter integer SH_W    = 8,  SH_S = 0;
    parameter integer OFF_W   = 64, OFF_S = 1, HAS_OFF = 0;
    parameter signed [31:0] ZP      = 0;
    parameter signed [31:0] OUT_MIN = 0;
    parameter signed [31:0] OUT_MAX = 255;
    parameter integer MODE    = 1;
    `include "tb_util.vh"

    reg [IN_W-1:0]  in_mem  [0:N_ELEM-1];
    reg [OUT_W-1:0] out_mem [0:N_ELEM-1];
    reg [M_W-1:0]   m_mem   [0:NC-1];
    reg [SH_W-1:0]  sh_mem  [0:NC-1];
    reg [OFF_W-1:0] off_mem [0:NC-1];

    reg clk = 0, rst = 1, in_valid = 0;
    reg signed [31:0] acc, mult;
    reg [5:0] shift;
    reg signed [63:0] offset;
    wire out_valid;
    wire signed [31:0] y;
    always #5 clk = ~clk;

    rq_requant #(.ACC_W(32)) dut (.clk(clk), .rst(rst), .in_valid(in_valid), .acc(acc), .mult(mult),
        .shift(shift), .offset(offset), .zp(ZP), .out_min(OUT_MIN), .out_max(OUT_MAX), .mode(MODE[1:0]),
        .out_valid(out_valid), .y(y));

    integer i, ch, o;
    reg signed [63:0] want;
    initial begin
        n_checked = 0; n_bad = 0; o = 0;
        if (!$value$plusargs("in=%s", fname)) $fatal(1, "missing +in=");
        $readmemh(fname, in_mem);
        if (!$value$plusargs("out=%s", fname)) $fatal(1, "missing +out=");
        $readmemh(fname, out_mem);
        if (!$value$plusargs("mult=%s", fname)) $fatal(1, "missing +mult=");
        $readmemh(fname, m_mem);
        if (!$value$plusargs("shift=%s", fname)) $fatal(1, "missing +shift=");
        $readmemh(fname, sh_mem);
        if (HAS_OFF != 0) begin
            if (!$value$plusargs("offset=%s", fname)) $fatal(1, "missing +offset=");
            $readmemh(fname, off_mem);
        end
        if ((^in_mem[N_ELEM-1] === 1'bx) || (^out_mem[N_ELEM-1] === 1'bx) || (^m_mem[NC-1] === 1'bx))
            $fatal(1, "a golden file is shorter than the manifest says");
        repeat (2) @(negedge clk);
        rst = 0;
        for (i = 0; i < N_ELEM; i = i + 1) begin
            @(negedge clk);
            ch = (NC == 1) ? 0 : (i % C);
            in_valid = 1;
            acc    = sx64(in_mem[i], IN_W, IN_S);
            mult   = sx64(m_mem[ch], M_W, M_S);
            shift  = sx64(sh_mem[ch], SH_W, SH_S);
            offset = (HAS_OFF != 0) ? sx64(off_mem[ch], OFF_W, OFF_S) : 64'sd0;
        end
        @(negedge clk) in_valid = 0;
        repeat (4) @(negedge clk);
        report_and_exit("requant");
    end
    always @(posedge clk) begin
        if (out_valid) begin
            want = sx64(out_mem[o], OUT_W, OUT_S);
            if ($signed(y) != want) begin
                if (n_bad < 10) $display("MISMATCH requant element %0d: rtl %0d golden %0d", o, y, want);
                n_bad = n_bad + 1;
            end
            n_checked = n_checked + 1;
            o = o + 1;
        end
    end
endmodule
