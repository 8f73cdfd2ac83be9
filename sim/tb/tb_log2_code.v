// Replays a golden `log2_code` op through rq_log2_code.
// Plusargs: +p= (Q0.P probabilities) +thr= (thresholds [L]) +out= (codes)
`timescale 1ns/1ps
module tb_log2_code;
    parameter integer N_ELEM = 1;
    parameter integer L = 1;
    parameter integer ZSTATE = 15;
    parameter integer IN_W = 17, IN_S = 0;
    parameter integer OUT_W = 4, OUT_S = 0;
    parameter integer T_W = 32, T_S = 0;
    `include "tb_util.vh"

    reg [IN_W-1:0]  p_mem   [0:N_ELEM-1];
    reg [OUT_W-1:0] out_mem [0:N_ELEM-1];
    reg [T_W-1:0]   t_mem   [0:L-1];

    reg clk = 0, rst = 1, t_we = 0, in_valid = 0;
    reg [7:0] t_addr;
    reg [31:0] t_data, p;
    wire out_valid;
    wire [7:0] code;
    always #5 clk = ~clk;

    rq_log2_code #(.LMAX(L)) dut (.clk(clk), .rst(rst), .t_we(t_we), .t_addr(t_addr), .t_data(t_data),
        .levels(L[8:0]), .zstate(ZSTATE[7:0]), .in_valid(in_valid), .p(p), .out_valid(out_valid), .code(code));

    integer i, o;
    reg signed [63:0] want;
    initial begin
        n_checked = 0; n_bad = 0; o = 0;
        if (!$value$plusargs("p=%s", fname)) $fatal(1, "missing +p=");
        $readmemh(fname, p_mem);
        if (!$value$plusargs("out=%s", fname)) $fatal(1, "missing +out=");
        $readmemh(fname, out_mem);
        if (!$value$plusargs("thr=%s", fname)) $fatal(1, "missing +thr=");
        $readmemh(fname, t_mem);
        if ((^p_mem[N_ELEM-1] === 1'bx) || (^out_mem[N_ELEM-1] === 1'bx) || (^t_mem[L-1] === 1'bx))
            $fatal(1, "a golden file is shorter than the manifest says");
        repeat (2) @(negedge clk);
        rst = 0;
        for (i = 0; i < L; i = i + 1) begin
            t_we = 1; t_addr = i; t_data = sx64(t_mem[i], T_W, T_S);
            @(negedge clk);
        end
        t_we = 0;
        for (i = 0; i < N_ELEM; i = i + 1) begin
            in_valid = 1;
            p = sx64(p_mem[i], IN_W, IN_S);
            @(negedge clk);
        end
        in_valid = 0;
        repeat (3) @(negedge clk);
        report_and_exit("log2_code");
    end
    always @(posedge clk) begin
        if (out_valid) begin
            want = sx64(out_mem[o], OUT_W, OUT_S);
            if ({56'd0, code} != want) begin
                if (n_bad < 10) $display("MISMATCH log2_code element %0d: rtl %0d golden %0d", o, code, want);
                n_bad = n_bad + 1;
            end
            n_checked = n_checked + 1;
            o = o + 1;
        end
    end
endmodule
